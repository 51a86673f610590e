"""The optimizer groups weight decay as the Trainer does (no decay on biases and norms)."""

import pytest
import torch
from hf_checkpoints import FAMILIES, PREFIX, tiny_ctc_model

from fastctc.config import OptimConfig
from fastctc.models import load_pretrained
from fastctc.models.hf_weights import checkpoint_key
from fastctc.train.optim import build_optimizer, decay_parameter_names

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_decayed_parameters_are_the_trainers(tmp_path, family):
    hf = tiny_ctc_model(family)
    hf.save_pretrained(tmp_path / family)
    native = load_pretrained(tmp_path / family)
    prefix = PREFIX[hf.config.model_type] + "."
    ours = {
        name if name.startswith("lm_head.") else prefix + checkpoint_key(name, hf.config.model_type)
        for name in decay_parameter_names(native)
    }
    theirs = set(transformers.Trainer.get_decay_parameter_names(None, hf))
    assert ours == theirs, (sorted(ours - theirs), sorted(theirs - ours))
    assert any("bias" in n for n, _ in native.named_parameters()) and not any("bias" in n for n in ours)


def test_weight_decay_moves_only_the_decayed_parameters():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.5), torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam's update is 0: only decay moves a parameter
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"0.weight"}
    torch.testing.assert_close(model[0].weight, before["0.weight"] * (1 - 0.1 * 0.5))
