"""HostSyncChecker: record, on a CPU, the ops that would make the host wait for a CUDA device.

On a GPU the host queues kernels and runs ahead; anything that needs a device value on the host
drains the queue first. Those are:
  - a scalar read: `.item()`, `float(t)`, `int(t)`, `bool(t)` / `if t:` (aten._local_scalar_dense);
  - an op whose output shape depends on the data: boolean-mask indexing and assignment (index with a
    bool index, index_put_), nonzero / argwhere, unique*, masked_select, repeat_interleave without
    output_size, bincount, torch.equal;
  - a copy to the host: `.cpu()`, `.tolist()`, `.numpy()` (and on CUDA `.to("cpu")`);
  - a host-to-device copy that is not `non_blocking` (or, on CUDA, from pageable, unpinned memory).

Two modes cooperate: a TorchFunctionMode sees the Python-level calls (factories with or without a
`device=`, `.to(device)`, `.cpu()`, `.tolist()`), and a TorchDispatchMode sees every aten op, the
backward's and the optimizer's included. Each event keeps the Python stack where it happened.

Which tensors live "on the device"? On CUDA, the tensors that are. On a CPU (emulation) every tensor
does, except the host ones: those made by a Python-level factory without `device=` (`torch.arange(T)`,
`torch.rand(())`: CPU tensors on a GPU run too; so is a factory given the string "cpu", whereas a
torch.device, such as `x.device`, names the run's device), those declared with `host(...)` (a CPU batch from the
loader), results of `.cpu()` / `.tolist()`, and whatever is computed from host tensors alone. A
host tensor's `.to(device)` is the hand-off: its result is a device tensor (a copy, as on a GPU).
Limits on CPU: `.to("cpu")` of a device tensor cannot be told from a no-op `.to(device)` (use `.cpu()`,
which is seen), and whether memory is pinned can only be checked where CUDA is available.

    with HostSyncChecker() as syncs:
        syncs.host(batch.waveforms, batch.lengths)    # what the loader hands over, on the host
        step(...)
    assert not syncs.events, syncs.report()

`host_tensors` lists, apart from the syncs, tensors made on the host inside the region and host
tensors (not 0-dim) fed to device ops: not syncs, but they keep a region out of a CUDA graph
(torch.compile's mode="reduce-overhead"). Kernel launches under Triton's interpreter run on the host
by design; what they do is not counted (on a GPU a launch is asynchronous).
"""

from __future__ import annotations

import dataclasses
import os
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten

# aten ops that wait for the device whatever their arguments (on a device tensor)
_ALWAYS = {
    aten._local_scalar_dense.default: "scalar read (.item() / float() / bool() / if tensor)",
    aten.nonzero.default: "nonzero (data-dependent shape)",
    aten.nonzero.out: "nonzero (data-dependent shape)",
    aten.masked_select.default: "masked_select (data-dependent shape)",
    aten._unique.default: "unique (data-dependent shape)",
    aten._unique2.default: "unique (data-dependent shape)",
    aten.unique_dim.default: "unique (data-dependent shape)",
    aten.unique_consecutive.default: "unique_consecutive (data-dependent shape)",
    aten.unique_dim_consecutive.default: "unique_consecutive (data-dependent shape)",
    aten.bincount.default: "bincount (output size from the data's max)",
    aten.equal.default: "torch.equal (returns a Python bool)",
}
# ops that wait only with a boolean index (the kernel runs nonzero on it)
_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_FACTORIES = {
    torch.arange,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.tensor,
    torch.as_tensor,
    torch.linspace,
    torch.eye,
    torch.from_numpy,
    torch.scalar_tensor,
}
_TO_HOST = {
    torch.Tensor.cpu: ".cpu()",
    torch.Tensor.tolist: ".tolist()",
    torch.Tensor.numpy: ".numpy()",
    torch.Tensor.__array__: "numpy conversion",
}
_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))


@dataclasses.dataclass
class HostSync:
    kind: str  # what waits, e.g. "scalar read (.item() ...)"
    op: str  # the aten op or Python call
    stack: list[str]  # "file:line in function: code", outermost first, torch's frames left out

    def where(self) -> str:
        return self.stack[-1] if self.stack else "?"

    def __str__(self) -> str:
        return f"{self.kind} [{self.op}]\n" + "\n".join(f"    {line}" for line in self.stack)


def _user_stack(limit: int = 8) -> list[str]:
    frames = [
        f
        for f in traceback.extract_stack()[:-3]
        if not f.filename.startswith((_HERE, _TORCH))
        and not any(s in f.filename for s in ("/contextlib.py", "/_pytest/", "/pluggy/", "<frozen"))
    ]
    return [f"{f.filename}:{f.lineno} in {f.name}: {f.line}" for f in frames[-limit:]]


def _in_triton_interpreter() -> bool:
    return any("/triton/" in f.filename for f in traceback.extract_stack())


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _target_device(args, kwargs) -> torch.device | None:
    """The device a Tensor.to / Tensor.cuda call names, or None (a dtype-only .to)."""
    if kwargs.get("device") is not None:
        return torch.device(kwargs["device"])
    for a in args[1:]:
        if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            return torch.device(a) if not isinstance(a, int) else torch.device("cuda", a)
        if isinstance(a, torch.Tensor):
            return a.device
    return None


class HostSyncChecker:
    """Context manager recording host syncs (see the module doc). `events`: the HostSyncs in order."""

    def __init__(self, device: torch.device | str | None = None):
        self.emulated = device is None or torch.device(device).type == "cpu"
        self.events: list[HostSync] = []
        # not syncs, but what keeps a region from being captured as a CUDA graph (reduce-overhead):
        # tensors made on the host inside it, and host tensors (not 0-dim) fed to device ops
        self.host_tensors: list[HostSync] = []
        self._host = WeakIdKeyDictionary()  # emulation: tensors that live on the host
        self._quiet = 0  # > 0 inside a Python-level call already recorded
        self._modes = (_FunctionMode(self), _DispatchMode(self))

    # -- what lives where ------------------------------------------------------------------------
    def host(self, *tensors) -> None:
        """Declare tensors (or structures of them, e.g. a dataclass's fields) to live on the host."""
        fields = [
            [getattr(x, f.name) for f in dataclasses.fields(x)] if dataclasses.is_dataclass(x) else x for x in tensors
        ]
        for t in _tensors(fields):
            self._host[t] = True

    def on_device(self, t: torch.Tensor) -> bool:
        if not self.emulated:
            return t.device.type != "cpu"
        return t not in self._host

    def _mark(self, outputs, host: bool) -> None:
        if not self.emulated:
            return
        for t in _tensors(outputs):
            if host:
                self._host[t] = True
            else:
                self._host.pop(t, None)

    # -- recording ---------------------------------------------------------------------------------
    def _record(self, kind: str, op: str, into: list | None = None) -> None:
        if self._quiet or _in_triton_interpreter():
            return
        (self.events if into is None else into).append(HostSync(kind, op, _user_stack()))

    def count(self) -> int:
        return len(self.events)

    def report(self) -> str:
        if not self.events:
            return "no host syncs"
        return f"{len(self.events)} host sync(s):\n" + "\n".join(f"{i + 1}. {e}" for i, e in enumerate(self.events))

    def __enter__(self) -> HostSyncChecker:
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for m in reversed(self._modes):
            m.__exit__(*exc)


class _FunctionMode(TorchFunctionMode):
    def __init__(self, checker: HostSyncChecker):
        super().__init__()
        self.c = checker

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        c = self.c
        if func in _TO_HOST and isinstance(args[0], torch.Tensor) and c.on_device(args[0]):
            c._record("copy to host", _TO_HOST[func])
            c._quiet += 1
            try:
                out = func(*args, **kwargs)
            finally:
                c._quiet -= 1
            c._mark(out, host=True)
            return out
        if func in (torch.Tensor.to, torch.Tensor.cuda) and isinstance(args[0], torch.Tensor):
            return self._to(func, args, kwargs)
        out = func(*args, **kwargs)
        if func in _FACTORIES and kwargs.get("device") in (None, "cpu") and not _tensors((args, kwargs)):
            c._mark(out, host=True)  # torch.arange(T), torch.rand(()), device="cpu": CPU tensors on a GPU run too
            c._record(f"tensor made on the host (torch.{func.__name__} without device=)", func.__name__, c.host_tensors)
        elif func in _TO_HOST or func is torch.Tensor.pin_memory:
            c._mark(out, host=True)
        return out

    def _to(self, func, args, kwargs):
        c, src = self.c, args[0]
        target = (
            torch.device("cuda")
            if func is torch.Tensor.cuda and _target_device(args, kwargs) is None
            else _target_device(args, kwargs)
        )
        non_blocking = bool(kwargs.get("non_blocking", False))
        to_device = target is not None and (target.type != "cpu" or (c.emulated and not c.on_device(src)))
        if to_device and not c.on_device(src):  # the hand-off to the device
            if not non_blocking:
                c._record("blocking host-to-device copy (pass non_blocking=True from pinned memory)", "Tensor.to")
            elif not c.emulated and not src.is_pinned():
                c._record("host-to-device copy from pageable memory (pin it: DataLoader(pin_memory=True))", "Tensor.to")
        c._quiet += 1
        try:
            out = func(*args, **kwargs)
        finally:
            c._quiet -= 1
        if to_device and out is src:  # emulation: the device copy a GPU would make
            out = src.clone()
        if to_device:
            c._mark(out, host=False)
        elif target is not None and target.type == "cpu" and not c.emulated and c.on_device(src):
            c._record("copy to host", "Tensor.to('cpu')")
        return out


class _DispatchMode(TorchDispatchMode):
    def __init__(self, checker: HostSyncChecker):
        super().__init__()
        self.c = checker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        c = self.c
        inputs = _tensors((args, kwargs))
        on_device = any(c.on_device(t) for t in inputs)
        if on_device:
            kind = _ALWAYS.get(func)
            if kind is None and func in _INDEXING:
                if any(t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1])):
                    kind = "boolean-mask indexing (data-dependent shape; use torch.where / masked_fill)"
            elif kind is None and func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
                kind = "repeat_interleave without output_size (data-dependent shape)"
            elif kind is None and not c.emulated and func in (aten._to_copy.default, aten.copy_.default):
                src, dst_cpu = (
                    (args[0], kwargs.get("device") == torch.device("cpu"))
                    if func is aten._to_copy.default
                    else (args[1], args[0].device.type == "cpu")
                )
                if src.device.type != "cpu" and dst_cpu and not kwargs.get("non_blocking", False):
                    kind = "copy to host"
            if kind is not None:
                c._record(kind, str(func))
            host_inputs = [t for t in inputs if t.dim() > 0 and not c.on_device(t)]
            if host_inputs and func not in (aten._to_copy.default, aten.copy_.default):
                c._record(f"host tensor {tuple(host_inputs[0].shape)} fed to a device op", str(func), c.host_tensors)
        out = func(*args, **kwargs)
        if c.emulated and inputs:  # results of host tensors alone stay on the host; in-place ops keep theirs
            c._mark([t for t in _tensors(out) if not any(t is i for i in inputs)], host=not on_device)
        return out


def assert_no_host_syncs(checker: HostSyncChecker, allowed: int = 0, what: str = "") -> None:
    """Raise AssertionError listing every sync (with its stack) when more than `allowed` happened."""
    if checker.count() > allowed:
        raise AssertionError(f"{what}: {checker.count()} host sync(s), at most {allowed} allowed\n{checker.report()}")
