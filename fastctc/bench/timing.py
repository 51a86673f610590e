"""Side-by-side timing shared by the benchmarks: every provider runs in the same process, in an order
that alternates from one round to the next, and is summarised by its median and p20/p80 spread.

Alternating the order (A B C, then C B A, ...) spreads slow drift (thermal, a neighbour's job, the
allocator warming up) over every provider instead of charging it to whichever runs last.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch


@contextlib.contextmanager
def profiler_quiet():
    """Send file descriptor 2 to /dev/null while torch.profiler starts and stops: its native side
    (kineto) writes `USDT:... profiler_start` / `profiler_stop` lines there, which would land in
    the middle of a benchmark's table. Python's own stderr is flushed first and restored after."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) of a non-empty list."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(seconds: list[float]) -> dict:
    """Median and p20/p80 in milliseconds, and the number of timed runs."""
    return {
        "median_ms": 1e3 * statistics.median(seconds),
        "p20_ms": 1e3 * quantile(seconds, 0.2),
        "p80_ms": 1e3 * quantile(seconds, 0.8),
        "runs": len(seconds),
    }


def alternate(
    providers: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    log=print,
) -> dict[str, dict]:
    """Time each provider `repeats` times, alternating the order every round, after `warmup` untimed
    calls each (a compiled provider compiles there: the first warm-up call is reported as first_call_s).

    Returns {name: summary(...) + first_call_s}.
    """
    names = list(providers)
    first: dict[str, float] = {}
    for name in names:
        for i in range(warmup):
            sync(device)
            t0 = time.perf_counter()
            providers[name]()
            sync(device)
            if i == 0:
                first[name] = time.perf_counter() - t0
        if warmup:
            log(f"  warm-up {name}: first call {first[name]:.2f} s")
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            t0 = time.perf_counter()
            providers[name]()
            sync(device)
            samples[name].append(time.perf_counter() - t0)
    return {n: {**summary(samples[n]), "first_call_s": first.get(n)} for n in names}


def peak_memory_mb(fn: Callable[[], object], device: torch.device | str) -> float | None:
    """Peak memory one call of `fn` allocates above what was live before it, in MiB.

    CUDA: the caching allocator's peak. CPU: a running sum of the allocations and frees that
    torch.profiler records (profile_memory=True) through c10's CPU allocator, which eager ops and
    compiled kernels both use; memory allocated outside torch (numpy) is not seen. The events are read
    from the profiler's event tree (torch._C._profiler, not public API): None where that fails.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profiler_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        from torch._C._profiler import _EventType

        events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.typed[0] == _EventType.Allocation and node.typed[1].device.type == "cpu":
                events.append((node.start_time_ns, node.typed[1].alloc_size))
    except (AttributeError, ImportError):
        return None
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak / 2**20


def environment(device: torch.device | str) -> dict:
    """Machine and versions, for the report line and the README table."""
    device = torch.device(device)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_model_name(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform's answer."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def profile_table(fn: Callable[[], object], device: torch.device | str, rows: int = 15) -> str:
    """torch.profiler's table of the ops that took the most self time in one call of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profiler_quiet(), profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def add_run_args(ap, repeats_help: str) -> None:
    """The options every model benchmark shares: repeats, warm-up, compile, profile, threads, device."""
    ap.add_argument("--repeats", type=int, default=7, help=f"{repeats_help} (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per provider first (default 2)")
    ap.add_argument("--compile", choices=("on", "off"), default="on", help="also time fastctc under torch.compile")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, print the N ops with the most self time per provider (torch.profiler)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def setup_device(args) -> torch.device:
    """Apply --threads and --device; float32 means float32 on both sides (no TF32 on a GPU)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if args.device == "auto" and cuda else "cpu" if args.device == "auto" else args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return device


def print_goals(goals: dict, heading: str) -> None:
    print(heading)
    for name, g in goals.items():
        print(
            f"  {name}: {g['worst']:.2f}x ({g['family']}), target >= {g['target']}x: {'met' if g['met'] else 'MISSED'}"
        )
