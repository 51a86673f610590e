"""Developer tools that check, on a CPU, properties that decide speed on a GPU.

host_syncs  HostSyncChecker: records the ops that would make the host wait for a CUDA device,
            with the Python stack of each (tests/test_host_syncs.py runs it over the training step).
"""
