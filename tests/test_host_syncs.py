"""HostSyncChecker on small functions that do and do not synchronise, then over fastctc's own step,
evaluation and data hand-off (the goal: zero syncs on a step that does not log, one on a step that does).

Each case says what a CUDA run would do; the checker emulates it on CPU (fastctc.devtools.host_syncs).
"""

import pytest
import torch

from fastctc.devtools.host_syncs import HostSyncChecker, assert_no_host_syncs


def syncs_of(fn, *host_tensors):
    with HostSyncChecker() as c:
        c.host(*host_tensors)
        fn()
    return c


# ---- the checker itself --------------------------------------------------------------------------

SYNCING = {
    "item": lambda x: x.sum().item(),
    "float": lambda x: float(x.sum()),
    "bool branch": lambda x: 1 if x.sum() > 0 else 0,
    "mask index": lambda x: x[x > 0],
    "mask assign": lambda x: x.clone().__setitem__(x > 0, 0.0),
    "nonzero": lambda x: torch.nonzero(x > 0),
    "unique": lambda x: torch.unique((x * 3).long()),
    "masked_select": lambda x: x.masked_select(x > 0),
    "repeat_interleave": lambda x: torch.repeat_interleave(x, (x > 0).long()),
    "cpu": lambda x: x.cpu(),
    "tolist": lambda x: x.tolist(),
    "numpy": lambda x: x.detach().numpy(),
    "equal": lambda x: torch.equal(x, x),
    "blocking hand-off": None,  # below: a host tensor moved without non_blocking
}


@pytest.mark.parametrize("name", [n for n, f in SYNCING.items() if f is not None])
def test_each_syncing_op_is_recorded_once_with_its_line(name):
    x = torch.randn(16)
    c = syncs_of(lambda: SYNCING[name](x))
    assert c.count() == 1, c.report()
    assert "test_host_syncs.py" in c.events[0].where(), c.report()  # the stack names this file's line


NOT_SYNCING = {
    "arithmetic": lambda x: (x * 2 + 1).softmax(0),
    "where instead of mask": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "masked_fill": lambda x: x.masked_fill(x > 0, 0.0),
    "repeat_interleave with output_size": lambda x: torch.repeat_interleave(x, torch.full_like(x, 2).long(),
                                                                            output_size=32),
    "topk and scatter": lambda x: torch.zeros(16, dtype=torch.bool).scatter(0, x.topk(3).indices, True),
    "integer index": lambda x: x[torch.arange(4, device=x.device)],
    "python scalar math": lambda x: x * 3.0 / len(x),
    "isfinite on device": lambda x: torch.isfinite(x).all(),
}


@pytest.mark.parametrize("name", list(NOT_SYNCING))
def test_sync_free_ops_record_nothing(name):
    x = torch.randn(16)
    c = syncs_of(lambda: NOT_SYNCING[name](x))
    assert c.count() == 0, c.report()


def test_host_tensors_are_free_to_read():
    """A CPU tensor on a GPU run (the loader's batch, torch.rand(()) without device=) syncs nothing."""
    lengths = torch.tensor([16000, 12000])
    c = syncs_of(lambda: (float(lengths.sum()), lengths.tolist(), bool(torch.rand(()) < 0.5)), lengths)
    assert c.count() == 0, c.report()
    # the same read of a device tensor (made with device=) is a sync
    c = syncs_of(lambda: float(torch.ones(3, device=lengths.device).sum()))
    assert c.count() == 1, c.report()


def test_hand_off_must_be_non_blocking_and_yields_a_device_tensor():
    host = torch.randn(2, 8)
    c = syncs_of(lambda: host.to("cpu"), host)
    assert c.count() == 1 and "non_blocking" in c.events[0].kind, c.report()
    with HostSyncChecker() as c:
        c.host(host)
        dev = host.to("cpu", non_blocking=True)
        assert dev is not host  # the emulated device copy
        dev.sum().item()  # now a device read
    assert c.count() == 1 and c.events[0].kind.startswith("scalar read"), c.report()


def test_backward_and_optimizer_are_seen():
    """Syncs inside autograd's backward (index_put with a bool mask) are recorded too."""
    w = torch.randn(8, requires_grad=True)
    mask = torch.rand(8, device=w.device) > 0.5

    def fwd_bwd():
        w[mask].sum().backward()  # forward: index with a bool mask; backward: index_put with it

    c = syncs_of(fwd_bwd)
    assert [e.op for e in c.events] == ["aten.index.Tensor", "aten.index_put.default"], c.report()

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(5, 4)

    def step():
        model(x).square().mean().backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return norm

    c = syncs_of(step, x)
    assert c.count() == 0, c.report()


def test_assert_no_host_syncs_lists_the_stacks():
    x = torch.randn(4)
    c = syncs_of(lambda: x.sum().item())
    with pytest.raises(AssertionError, match="scalar read"):
        assert_no_host_syncs(c, what="demo")
    assert_no_host_syncs(c, allowed=1)


def test_host_tensors_inside_the_region_are_listed_apart():
    """Not syncs, but they keep a region out of a CUDA graph: a factory without device= and a host
    tensor fed to a device op."""
    x = torch.randn(8)
    c = syncs_of(lambda: x + torch.arange(8))
    assert c.count() == 0, c.report()
    assert [e.kind.split(" (")[0] for e in c.host_tensors] == ["tensor made on the host", "host tensor"], c.host_tensors
    c = syncs_of(lambda: x + torch.arange(8, device=x.device))
    assert c.count() == 0 and not c.host_tensors
