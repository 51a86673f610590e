"""Developer tools that check, on a CPU, properties that decide speed on a GPU.

  host_syncs  HostSyncChecker: records the ops that would make the host wait for a CUDA device.
  cost        (fastctc.bench.cost) FLOPs and bytes of a step, and the H100 floor it implies.
"""
