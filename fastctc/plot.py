"""`fastctc plot RUN_DIR`: loss, WER/CER and learning-rate curves from metrics.jsonl as one PNG."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .errors import FastCTCError


def read_metrics(run_dir: Path, say: Callable[[str], None] = lambda message: None) -> list[dict]:
    """The events of RUN_DIR/metrics.jsonl; `say` hears of each line it skips."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FastCTCError(f"{path} not found; pass a run directory written by fastctc train")
    events = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: skip it, keep the rest
                say(f"skipping unreadable line {n} of {path}")
    return events


def plot_run(run_dir: Path, out: Path, say: Callable[[str], None] = lambda message: None) -> Path:
    if not out.parent.is_dir():  # checked before matplotlib and the metrics are read
        raise FastCTCError(
            f"--out {out}: the folder {out.parent} does not exist; create it (mkdir -p {out.parent}) "
            "or choose another path"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FastCTCError("plotting needs matplotlib: pip install 'fastctc[plot]'") from None
    events = read_metrics(run_dir, say)
    train = [e for e in events if e.get("event") == "train"]
    evals = [e for e in events if e.get("event") == "eval"]
    if not train and not evals:
        raise FastCTCError(f"{run_dir / 'metrics.jsonl'} holds no train or eval events yet")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot([e["step"] for e in train], [e["loss"] for e in train], label="train")
    ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", label="eval")
    ax.set(title="CTC loss", xlabel="step", yscale="log")
    ax.legend()
    ax = axes[1]
    ax.plot([e["step"] for e in evals], [e["wer"] for e in evals], "o-", label="WER")
    ax.plot([e["step"] for e in evals], [e["cer"] for e in evals], "o-", label="CER")
    ax.set(title="eval error rates", xlabel="step")
    ax.legend()
    ax = axes[2]
    ax.plot([e["step"] for e in train], [e["lr"] for e in train])
    ax.set(title="learning rate", xlabel="step")
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
