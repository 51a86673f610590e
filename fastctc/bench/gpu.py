"""The one command for a GPU hour: every CUDA test and benchmark, one markdown page, one JSON file.

    fastctc bench gpu                       # <= 8 minutes on one H100, no network
    fastctc bench gpu --out gpu-report --budget-s 420

Parts, in this order (the cost model first: it needs no GPU and every later figure is read
against it), each in its own process with its own time limit (a crash or a hang costs that
part, not the report), and skipped when the remaining budget is below the part's estimate:
  cost     fastctc bench cost: the floor and the predicted time of every card (meta device, seconds)
  tests    pytest -m cuda (tests/test_cuda.py): the fused CTC on the device against float64 (fp32
           and bf16 logits, up to LibriSpeech's longest batch; short targets with V 256; one
           compile per block size), a bf16 step against fp32, compiled against eager, reduce-overhead, and
           HostSyncChecker against CUDA's own sync detector (torch.cuda.set_sync_debug_mode)
  ctc      fastctc bench ctc: the fused kernel against log_softmax + torch's ctc_loss at TIMIT and
           LibriSpeech shapes, bf16 logits (goal: forward+backward >= 3x)
  encoder  fastctc bench encoder --size card (wav2vec2-base, wavlm-large): native against
           transformers, eager and compiled
  step     fastctc bench step --size card --precision bf16 (wav2vec2-base, hubert-large): the whole
           step against the Trainer-equivalent step (goal >= 2x), and its MFU against the cost model
  train    fastctc train on generated audio at wav2vec2-base size, bf16, compiled, 80 steps: the
           loop's throughput, compile time and peak memory

The limits sum to at most the budget (they shrink in proportion for a smaller one), so the command
ends within it, torch.compile warm-up on empty caches included. Each part's output is streamed to
the log as it comes (stderr too, and on a timeout); every JSON line a part prints (one per model or
shape, where the benchmark prints them) is kept, and the command prints one JSON line per part and
rewrites report.json as each part ends. A part that fails, times out or misses a correctness check
(a failed CUDA test, the fused kernel against float64) is red.

Writes OUT/report.md (every figure next to its goal) and OUT/report.json. Without CUDA every GPU part
is reported as skipped, with the reason; `--smoke` runs each part at its smallest size on whatever
device there is (how CI checks this command's control flow on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from . import cost
from .timing import environment

H100_PEAK = cost.H100_DATASHEET.bf16_flops
GOALS = {"ctc_fwd_bwd_vs_torch": 3.0, "step_vs_trainer_bf16": 2.0}
REPO = Path(__file__).resolve().parents[2]  # a checkout: tests/ and configs/ are here


@dataclasses.dataclass
class Part:
    name: str
    what: str
    estimate_s: float  # what it needs of the budget to be started
    limit_s: float  # killed after this long
    needs_cuda: bool = True


BUDGET_S = 480.0  # of one 10-minute GPU call: the rest is start-up, transfers and slack
PARTS = [
    Part("cost", "fastctc bench cost (the cost model; no GPU needed)", 5, 20, needs_cuda=False),
    Part("tests", "pytest -m cuda tests/test_cuda.py", 60, 110),
    Part("ctc", "fastctc bench ctc (bf16 logits, TIMIT and LibriSpeech shapes)", 30, 80),
    Part("encoder", "fastctc bench encoder --size card (wav2vec2-base, wavlm-large)", 45, 90),
    Part("step", "fastctc bench step --size card --precision bf16 (wav2vec2-base, hubert-large)", 45, 100),
    Part("train", "fastctc train, generated audio, wav2vec2-base size, bf16, compiled, 80 steps", 45, 80),
]


def part_limits(budget_s: float, parts=PARTS) -> dict[str, float]:
    """Each part's time limit: the table's, scaled down so that they sum to at most the budget."""
    scale = min(1.0, budget_s / sum(p.limit_s for p in parts))
    return {p.name: p.limit_s * scale for p in parts}


# each part at its smallest size (--smoke): a tiny encoder, two timed runs, no compile
SMOKE_SIZE = "--size tiny --batch 2 --seconds 0.2 --repeats 2 --warmup 1 --compile off".split()
CARD_SIZE = "--size card --repeats 5 --warmup 2".split()


def cuda_tests_command(out: Path) -> list[str]:
    """pytest -m cuda in one process (the repository's addopts run the suite on two xdist workers), its
    outcome written to OUT/cuda-tests.xml, where `pytest_counts` reads it."""
    pytest = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", "-n", "0"]
    return pytest + [str(REPO / "tests" / "test_cuda.py"), f"--junitxml={out / 'cuda-tests.xml'}"]


def part_command(name: str, smoke: bool, out: Path) -> list[str]:
    """The command line of a part; --smoke shrinks each to its smallest configuration."""
    fastctc = [sys.executable, "-m", "fastctc"]
    if name == "tests":
        return cuda_tests_command(out)
    if name == "ctc":
        return fastctc + ["bench", "ctc", "--dtype", "bfloat16"] + (["--cards", "timit"] if smoke else [])
    if name == "encoder":
        size = SMOKE_SIZE if smoke else CARD_SIZE
        return fastctc + ["bench", "encoder", "--families", "wav2vec2-base", "wavlm-large", *size]
    if name == "step":
        size = SMOKE_SIZE + ["--precision", "fp32"] if smoke else CARD_SIZE + ["--precision", "bf16"]
        return fastctc + ["bench", "step", "--families", "wav2vec2-base", "hubert-large", *size]
    if name == "train":
        demo = str(REPO / "configs" / "demo.toml")
        return fastctc + ["train", demo, "--out", str(out / "train-run"), *train_overrides(smoke)]
    if name == "cost":
        return fastctc + ["bench", "cost"] + (["--cards", "wav2vec2-base-timit"] if smoke else [])
    raise ValueError(name)


def train_overrides(smoke: bool) -> list[str]:
    """wav2vec2-base's layout on generated audio (the demo corpus), bf16, compiled; --smoke: tiny, CPU."""
    if smoke:
        keys = [
            "model.hidden_size=32",
            "model.num_attention_heads=2",
            "model.intermediate_size=64",
            "model.conv_dim=[16, 16, 16, 16, 16, 16, 16]",
            "model.num_conv_pos_embedding_groups=2",
            "data.synthetic_train_size=16",
            "data.synthetic_eval_size=4",
            "train.batch_size=8",
            "train.max_steps=4",
            "train.log_every=2",
            "train.eval_every=0",
            "train.threads=1",
            "train.precision=fp32",
            "train.compile=off",
        ]
    else:
        keys = [
            "model.hidden_size=768",
            "model.num_hidden_layers=12",
            "model.num_attention_heads=12",
            "model.intermediate_size=3072",
            "model.conv_dim=[512, 512, 512, 512, 512, 512, 512]",
            "model.num_conv_pos_embeddings=128",
            "model.num_conv_pos_embedding_groups=16",
            "model.feat_extract_norm=group",
            "model.do_stable_layer_norm=false",
            "model.freeze_feature_encoder=true",
            "model.mask_time_prob=0.05",
            "model.mask_time_length=10",
            "data.synthetic_train_size=2560",
            "data.synthetic_eval_size=64",
            "train.batch_size=32",
            "train.max_steps=80",
            "train.log_every=20",
            "train.eval_every=0",
            "train.precision=bf16",
            "train.compile=on",
            "optim.lr=1e-4",
            "optim.warmup_steps=20",
        ]
    return [a for k in keys for a in ("--set", k)]


def run_part(part: Part, cmd: list[str], limit_s: float, log) -> dict:
    """Run one part, stdout and stderr streamed into the log as they come (a timeout keeps them).

    ``lines``: every JSON line it printed, in order; ``json``: the last one (the part's summary)."""
    t0 = time.time()
    log.write(f"\n===== {part.name} (limit {limit_s:.0f} s): {' '.join(cmd)}\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out: list[str] = []
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        cwd=REPO,
        start_new_session=True,
    )

    def pump():
        for line in proc.stdout:
            out.append(line.rstrip("\n"))
            log.write(line)
            log.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=limit_s)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group: its workers go too
        proc.wait()
        status = f"timed out after {limit_s:.0f} s"
    reader.join(timeout=10)
    result = {"status": status, "seconds": round(time.time() - t0, 1), "command": " ".join(cmd), "lines": []}
    for line in out:
        if line.startswith("{"):
            try:
                result["lines"].append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if result["lines"]:
        result["json"] = result["lines"][-1]
    result["tail"] = out[-12:]
    return result


def red_reason(name: str, res: dict) -> str | None:
    """Why a part that ran is red (it failed, timed out, or a correctness check missed), or None."""
    if name == "tests" and (res.get("counts", {}).get("failed") or res.get("counts", {}).get("error")):
        return f"CUDA tests failed: {res['counts']}"
    if name == "ctc":
        failed = res.get("json", {}).get("failed_checks") or [
            f"{s['shape']['card']} T={s['shape']['T']}"
            for s in res.get("lines", [])
            if "shape" in s and not s["shape"].get("vs_float64", {}).get("ok", True)
        ]
        if failed:
            return f"fused CTC missed the float64 tolerance at {', '.join(failed)}"
    if not res["status"].startswith("ok"):
        return res["status"]
    return None


def pytest_counts(junit: Path) -> dict:
    """passed / failed / error / skipped (those that occurred) from the JUnit XML the tests part writes;
    {} when the run ended before writing it."""
    if not junit.is_file():
        return {}
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts = {
        "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
        "failed": n["failures"],
        "error": n["errors"],
        "skipped": n["skipped"],
    }
    return {k: v for k, v in counts.items() if v}


def train_summary(run_dir: Path) -> dict:
    """The training run's final metrics.jsonl event (seconds by phase) and its last progress line."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    events = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    train = [e for e in events if e.get("event") == "train"]
    final = [e for e in events if e.get("event") not in ("train", "eval", "skip")]
    out = {"last_progress": train[-1] if train else None, "final": final[-1] if final else None}
    return out


def ctc_figures(ctc: dict) -> list[dict]:
    """The fused CTC against float64 and its speed against torch, per shape."""
    rows = []
    # the final JSON if the part finished, else the shapes it printed before it was stopped
    shapes = ctc.get("json", {}).get("shapes") or [x["shape"] for x in ctc.get("lines", []) if "shape" in x]
    for s in shapes:
        name = f"{s['card']} B={s['B']} T={s['T']} L={s['L']}"
        check = s.get("vs_float64")
        if check is not None:
            rows.append(
                {
                    "figure": f"CTC kernel vs float64 (loss and gradient), {name}",
                    "value": f"loss err {check['loss_err']:.2e}, grad err {check['grad_max_err']:.2e}",
                    "goal": "the tests' tolerance rule",
                    "met": bool(check["ok"]),
                }
            )
        if "speedup_fwd_bwd_vs_torch" in s:
            v = s["speedup_fwd_bwd_vs_torch"]
            ok = check is None or bool(check["ok"])  # a wrong kernel's speed is no figure
            rows.append(
                {
                    "figure": f"CTC fwd+bwd vs log_softmax + torch ctc_loss, {name}",
                    "value": f"{v:.2f}x",
                    "goal": ">= 3x" + ("" if ok else ", and correct"),
                    "met": ok and v >= GOALS["ctc_fwd_bwd_vs_torch"],
                }
            )
    return rows


def encoder_figures(enc: dict) -> list[dict]:
    return [
        {
            "figure": f"encoder {name} (worst: {g['family']})",
            "value": f"{g['worst']:.2f}x",
            "goal": f">= {g['target']}x",
            "met": g["met"],
        }
        for name, g in enc.get("goals", {}).items()
    ]


def step_figures(step: dict) -> list[dict]:
    """Each step provider against the Trainer-equivalent step, and its MFU where the cost model priced it."""
    rows = []
    for r in step.get("results", []):
        if r["provider"] == "trainer":
            continue
        rows.append(
            {
                "figure": f"step {r['family']} {r['provider']} {r['precision']} vs Trainer-equivalent "
                f"(batch {r['batch']} x {r['seconds']:g} s)",
                "value": f"{r['speedup_vs_trainer']:.2f}x",
                "goal": ">= 2x" if r["precision"] == "bf16" else "bf16 only",
                "met": r["speedup_vs_trainer"] >= GOALS["step_vs_trainer_bf16"] if r["precision"] == "bf16" else None,
            }
        )
        if r.get("model_flops"):
            mfu = r["model_flops"] / (r["median_ms"] / 1e3) / H100_PEAK
            rows.append(
                {
                    "figure": f"step {r['family']} {r['provider']}: MFU (cost model FLOPs / median time / 989 TFLOP/s)",
                    "value": f"{mfu:.1%}",
                    "goal": f"cost-model floor {r['floor_ms']:.1f} ms vs {r['median_ms']:.1f} ms measured",
                    "met": None,
                }
            )
    return rows


def train_figures(summary: dict) -> list[dict]:
    p = summary.get("last_progress")
    if not p:
        return []
    return [
        {
            "figure": "training run: audio seconds per second (last progress window)",
            "value": f"{p.get('audio_s_per_s', 0):.0f}",
            "goal": "—",
            "met": None,
        }
    ]


def figures(results: dict) -> list[dict]:
    """Every figure next to its goal: rows of (figure, value, goal, verdict)."""
    return (
        ctc_figures(results.get("ctc", {}))
        + encoder_figures(results.get("encoder", {}).get("json", {}))
        + step_figures(results.get("step", {}).get("json", {}))
        + train_figures(results.get("train", {}).get("summary", {}))
    )


def add_cost_to_steps(results: dict) -> None:
    """The cost model's FLOPs and floor for each benchmarked step shape (for MFU)."""
    step = results.get("step", {}).get("json", {})
    for r in step.get("results", []):
        if r.get("precision") != "bf16":
            continue
        c = cost.step_cost(r["family"], r["batch"], r["seconds"])
        r["model_flops"] = c["flops"]
        r["floor_ms"] = c["floor_s"]["h100"] * 1e3


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# fastctc on {env['device']}: one GPU run",
        "",
        f"{env['date_utc']} UTC; torch {env['torch']}, transformers {env.get('transformers')}, "
        f"Python {env['python']}; {report['total_s']:.0f} s in all (budget {report['budget_s']:.0f} s)"
        + ("; --smoke (smallest sizes)" if report["smoke"] else ""),
        "",
        "## Figures and goals",
        "",
        "| figure | value | goal | |",
        "|---|---|---|---|",
    ]
    for f in report["figures"]:
        verdict = "—" if f["met"] is None else ("met" if f["met"] else "**missed**")
        lines.append(f"| {f['figure']} | {f['value']} | {f['goal']} | {verdict} |")
    if not report["figures"]:
        lines.append("| (no GPU figures: see the parts below) | | | |")
    limits = " + ".join(f"{p['limit_s']:.0f}" for p in report["parts"])
    lines += [
        "",
        "## Parts",
        "",
        f"Time limits {limits} s = {sum(p['limit_s'] for p in report['parts']):.0f} s "
        f"<= budget {report['budget_s']:.0f} s.",
        "",
        "| part | what | status | seconds | limit s |",
        "|---|---|---|---|---|",
    ]
    for p in report["parts"]:
        status = f"**red**: {p['red']}" if p.get("red") else p["status"]
        lines.append(f"| {p['name']} | {p['what']} | {status} | {p.get('seconds', 0):.0f} | {p['limit_s']:.0f} |")
    tests = report["results"].get("tests", {})
    if tests.get("counts"):
        lines += ["", f"CUDA tests: {tests['counts']}"]
    cost_json = report["results"].get("cost", {}).get("json")
    if cost_json:
        lines += [
            "",
            "## Cost model (predicted, not measured)",
            "",
            cost.table(cost_json["results"], "h100", cost_json["mfu"]),
        ]
    lines += ["", f"Every part's full output: {report['log']}", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fastctc bench gpu",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    ap.add_argument("--out", type=Path, default=Path("gpu-report"), help="folder for report.md, report.json, log.txt")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=BUDGET_S,
        help=f"wall-clock budget for all parts; their limits sum to at most it (default {BUDGET_S:.0f})",
    )
    ap.add_argument("--parts", nargs="+", choices=[p.name for p in PARTS], default=[p.name for p in PARTS])
    ap.add_argument("--smoke", action="store_true", help="each part at its smallest size, on any device (CI)")
    return ap


def run_or_skip(part: Part, args, cuda: bool, limit_s: float, left_s: float, log) -> tuple[dict, dict | None]:
    """(the part's row of the report, its result; None when it was skipped, the row saying why)."""
    row = {"name": part.name, "what": part.what, "limit_s": round(limit_s, 1)}
    if part.needs_cuda and not cuda and not args.smoke and part.name != "tests":
        row["status"] = "skipped: no CUDA device (torch.cuda.is_available() is False)"
        return row, None
    if left_s < part.estimate_s and not args.smoke:
        row["status"] = f"skipped: {left_s:.0f} s of the budget left, needs ~{part.estimate_s:.0f} s"
        return row, None
    out = args.out.resolve()
    if part.name == "tests":
        (out / "cuda-tests.xml").unlink(missing_ok=True)  # an earlier run's outcome is not this one's
    res = run_part(part, part_command(part.name, args.smoke, out), limit_s, log)
    if part.name == "tests":
        res["counts"] = pytest_counts(out / "cuda-tests.xml")
        if not cuda and res["counts"].get("skipped") and not res["counts"].get("passed"):
            res["status"] += " (every test skipped: no CUDA device)"
    if part.name == "train":
        res["summary"] = train_summary(out / "train-run")
    row.update(status=res["status"], seconds=res["seconds"])
    if (why := red_reason(part.name, res)) is not None:
        row["red"] = why
    return row, res


def write_report(args, env: dict, t0: float, parts: list[dict], results: dict) -> dict:
    """OUT/report.json and OUT/report.md of the parts that ended so far."""
    report = {
        "bench": "gpu",
        "environment": env,
        "smoke": args.smoke,
        "budget_s": args.budget_s,
        "total_s": time.time() - t0,
        "parts": parts,
        "results": results,
        "goals": GOALS,
        "log": str(args.out / "log.txt"),
    }
    add_cost_to_steps(results)
    report["figures"] = figures(results)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "report.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    cuda = torch.cuda.is_available()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    chosen = [p for p in PARTS if p.name in args.parts]
    limits = part_limits(args.budget_s, chosen)
    results, parts = {}, []
    env = environment("cuda" if cuda else "cpu")
    with open(args.out / "log.txt", "w") as log:
        for part in chosen:
            left_s = args.budget_s - (time.time() - t0)
            row, res = run_or_skip(part, args, cuda, limits[part.name], left_s, log)
            if res is not None:
                results[part.name] = res
            print(
                f"[{time.time() - t0:5.0f} s] {part.name}: {row.get('red') and 'RED: ' or ''}{row['status']}",
                flush=True,
            )
            parts.append(row)
            lines = results.get(part.name, {}).get("lines", [])
            print(json.dumps({"bench": "gpu", "part": row, "lines": lines}, default=str), flush=True)
            write_report(args, env, t0, parts, results)  # after every part: a run stopped from outside keeps what ended
    report = write_report(args, env, t0, parts, results)
    print(f"\nwrote {args.out / 'report.md'} and {args.out / 'report.json'}")
    print(json.dumps({"bench": "gpu", "report": str(args.out / "report.md"), "parts": parts}))
    return report


if __name__ == "__main__":
    main()
