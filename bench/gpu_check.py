"""The GPU check: correctness on CUDA, race and deadlock checks of the persistent level, per-step
timings of every level against nn.LSTM (three precisions) and nn.GRU (TF32, bf16), end-to-end d2l
tokens/s, and the SASS tensor-core columns — one command, under 8 minutes on an H200, no network.

    python -m bench.gpu_check --out results/gpu          # on a CUDA machine (bench/gpu_check.sh)
    python -m bench.gpu_check --out /tmp/x --smoke       # CPU, interpreter, tiny shapes (CI)

Stages, each with a deadline (the deadlock guard: a hung kernel costs its stage, not the run):
``tests`` (this project's Triton tests on CUDA, pytest subprocess), ``race``, ``layers``, ``varlen``
(variable-length batches: B=64, H=512, T=1024, lengths uniform in [256, 1024]) and ``e2e``
(bench/gpu_stages.py, one subprocess each), and ``sass`` (lstm_triton.layers.kernel_report for the
device's architecture, compiled on the CPU in the background while the others run).

Writes into --out (default ``$OUT`` or results/gpu; at most 8 files): tests.log, checks.json
(machine, stage status, tests, race, accuracy, SASS rows), timings.csv, varlen.csv, e2e.csv,
kernel_report.json, summary.txt; prints the summary, per-step table last. Exit status 1 when a
test, the race check, an accuracy check or a stage failed or ran out of time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pandas as pd  # noqa: E402

from bench.gpu_sass import SassReport, device_arch  # noqa: E402
from bench.gpu_stages import LAYER_PROVIDERS  # noqa: E402
from bench.machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = ["tests/test_lstm_triton.py", "tests/test_lstm_math.py", "tests/test_lstm_api.py",
              "tests/test_train_triton.py", "tests/test_persistent_multiprogram.py", "tests/test_packed.py",
              "tests/test_projection.py", "tests/test_gru_rnn.py", "tests/test_precision.py"]
# Seconds per stage on a GPU (a bare machine compiles every kernel first: the tests get most).
# The layers stage gave 30 s to the varlen stage (compiling at H=512 is most of varlen's time).
# The GRU's layer rows (two precisions, two shapes) took 40 s: 30 from the tests, 10 from TOTAL_S.
# They add up to 410 s, plus the SASS stage's last wait (what is left of TOTAL_S): under the 465 s
# that gpu_check.sh allows, which with its ~15 s of set-up stays inside 8 minutes.
GPU_DEADLINES = {"tests": 170, "race": 25, "layers": 140, "varlen": 30, "e2e": 45}
SMOKE_DEADLINES = {"race": 300, "layers": 300, "varlen": 300, "e2e": 300}  # a busy 2-core CPU, the interpreter
STAGE_ORDER = ("race", "layers", "varlen", "e2e")
TOTAL_S = {"gpu": 450, "smoke": 900}
LAYER_KEY = ["cell", "shape", "precision", "mode"]  # a layer timing row; its speedup is over nn's row of the same key


def run_tests(out: Path, timeout_s: int) -> dict:
    """This project's Triton tests on CUDA (fp32 and bf16), in a subprocess with a deadline; a test
    file not in this checkout is left out with a note."""
    present = [t for t in CUDA_TESTS if (ROOT / t).exists()]
    absent = [t for t in CUDA_TESTS if t not in present]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *present],
                              cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout_s)
        log, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log, code = f"{partial}\nTIMEOUT after {timeout_s} s (deadlock guard)", 124
    note = f"not in this checkout, skipped: {', '.join(absent)}" if absent else ""
    (out / "tests.log").write_text((f"NOTE: {note}\n" if note else "") + log)
    last = [line for line in log.strip().splitlines() if line.strip()][-1:] or [""]
    return {"exit_code": code, "summary": last[0], "seconds": round(time.perf_counter() - start, 1),
            "files": present, "note": note}


def run_stage(stage: str, parts: Path, smoke: bool, timeout_s: float) -> dict:
    """One bench.gpu_stages stage in a subprocess; its output goes to this process's stdout."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.gpu_stages", stage, "--parts", str(parts)] + (["--smoke"] if smoke else [])
    print(f"stage {stage} (deadline {timeout_s:.0f} s)", flush=True)
    try:
        code = subprocess.run(cmd, cwd=ROOT, timeout=max(timeout_s, 1)).returncode
        note = "" if code == 0 else f"exited {code}"
    except subprocess.TimeoutExpired:
        code, note = 124, f"TIMEOUT after {timeout_s:.0f} s (deadlock guard); partial results kept"
    return {"stage": stage, "exit_code": code, "seconds": round(time.perf_counter() - start, 1), "note": note}


def read_parts(parts: Path, stage: str) -> list[dict]:
    path = parts / f"{stage}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# ---------------------------------------------------------------------------------------- tables


def accuracy_table(layers: pd.DataFrame) -> pd.DataFrame:
    """One row per cell × shape × precision × provider: the forward error vs float64 and whether it
    passes: within the precision's tolerance, or within 2× torch.nn's own error for the same cell,
    shape and precision (what fp arithmetic allows there). torch.nn is the baseline: reported,
    never failed. Rows without a ``cell`` column are the LSTM's."""
    key = ["cell", "shape", "precision"]
    if layers.empty:
        return pd.DataFrame(columns=[*key, "provider", "rel_err", "tolerance", "ok"])
    layers = layers.assign(cell=layers["cell"].fillna("lstm")) if "cell" in layers else layers.assign(cell="lstm")
    acc = layers.drop_duplicates([*key, "provider"])[[*key, "provider", "rel_err", "tolerance"]].copy()
    nn_err = acc[acc["provider"] == "nn"].set_index(key)["rel_err"]
    bound = [max(tol, 2 * nn_err.get(k, 0.0)) for k, tol in zip(zip(*(acc[c] for c in key)), acc["tolerance"])]
    acc["ok"] = [(prov == "nn") or (math.isfinite(err) and err <= b)
                 for prov, err, b in zip(acc["provider"], acc["rel_err"], bound)]
    return acc


VARLEN_COLUMNS = (("nn", "nn packed"), ("nn-padded", "nn padded"), ("triton-auto", "ours packed"),
                  ("triton-padded", "ours padded+lengths"))


def varlen_table(varlen: pd.DataFrame, timed: bool) -> str:
    """ms per batch call of the variable-length case (varlen.csv has ms per sequence), rows precision × mode, with
    ours packed's speedup over nn packed (target ≥ 5× forward+backward), its ratio to ours padded
    (target ≤ 1.2) and nn packed's slowdown over nn padded. Ratios only for timed runs."""
    if varlen.empty:
        return "(no variable-length timings)"
    header = ["precision", "mode", *(label for _, label in VARLEN_COLUMNS), "ours vs nn packed",
              "ours packed/padded", "nn packed/padded"]
    rows = []
    for (precision, mode), grp in varlen.groupby(["precision", "mode"], sort=False):
        ms = grp.set_index("provider")["ms"]
        get = lambda p, ms=ms: float(ms.get(p, math.nan))
        cells = [precision, mode] + [f"{get(p):.4g}" if not math.isnan(get(p)) else "—" for p, _ in VARLEN_COLUMNS]
        ratios = (get("nn") / get("triton-auto"), get("triton-auto") / get("triton-padded"),
                  get("nn") / get("nn-padded"))
        cells += [f"{r:.2f}×" if timed and not math.isnan(r) else "—" for r in ratios]
        rows.append(cells)
    return _text_table(header, rows)


def _varlen_caption(varlen: pd.DataFrame) -> str:
    if varlen.empty:
        return "not run"
    r = varlen.iloc[0]
    return f"B={r['B']}, I={r['I']}, H={r['H']}, T={r['T']}, lengths {r['lengths']} seed {r['lengths_seed']}, " \
           f"{r['real_tokens']} real tokens"


def per_step_table(layers: pd.DataFrame) -> str:
    """µs per time step, with the speedup over torch.nn's layer of the same cell (nn.LSTM, nn.GRU),
    rows cell × shape × precision × mode."""
    if layers.empty:
        return "(no layer timings)"
    key_cols = LAYER_KEY
    nn_us = layers[layers["provider"] == "nn"].set_index(key_cols)["us_per_step"]
    providers = [p for p in LAYER_PROVIDERS if p in set(layers["provider"])]
    header = [*key_cols, *providers]
    rows = []
    for key, grp in layers.groupby(key_cols, sort=False):
        cells = list(key)
        for provider in providers:
            row = grp[grp["provider"] == provider]
            if row.empty:
                cells.append("—")
                continue
            us = float(row["us_per_step"].iloc[0])
            speedup = nn_us.get(key, math.nan) / us
            plain = provider == "nn" or math.isnan(speedup) or bool(row["interpreted"].iloc[0])  # no speed figure
            cells.append(f"{us:.3g}" + ("" if plain else f" ({speedup:.2f}×)"))
        rows.append(cells)
    return _text_table(header, rows, left=len(key_cols))


def e2e_table(e2e: pd.DataFrame) -> str:
    if e2e.empty:
        return "(no end-to-end runs)"
    nn_tok = e2e.set_index("implementation")["tokens_per_sec_median"].get("nn", math.nan)
    rows = [[r.implementation, str(r.epochs), f"{r.tokens_per_sec_median:,.0f}",
             f"{r.tokens_per_sec_median / nn_tok:.2f}×" if not (math.isnan(nn_tok) or r.interpreted) else "—",
             f"{r.train_perplexity:.3f}", f"{r.val_perplexity:.2f}"] for r in e2e.itertuples()]
    return _text_table(["implementation", "epochs", "tokens/s (median epoch)", "vs nn", "train ppl", "val ppl"],
                       rows)


def sass_table(sass: dict) -> str:
    if not sass.get("rows"):
        return f"(no rows: {sass.get('note') or 'none marked d2l/large'})"
    cols = list(sass["rows"][0])
    text = _text_table(cols, [[_cell(r[c]) for c in cols] for r in sass["rows"]])
    return text + (f"\nnote: {sass['note']}" if sass.get("note") else "")


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _text_table(header: list[str], rows: list[list[str]], left: int = 3) -> str:
    """Plain-text columns: the first ``left`` left-aligned (labels), the rest right-aligned (numbers)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i >= left else str(c).ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "results/gpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no CUDA tests (CI)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = machine_info(device)
    deadlines, total = (SMOKE_DEADLINES, TOTAL_S["smoke"]) if args.smoke else (GPU_DEADLINES, TOTAL_S["gpu"])
    arch, arch_why = device_arch()
    sass_job = SassReport(out / "kernel_report.json", arch, rated_only=args.smoke)  # CPU-bound: beside the stages
    report: dict = {"machine": machine, "stages": []}
    if not args.smoke:
        report["tests"] = run_tests(out, deadlines["tests"])
        t = report["tests"]
        print(f"tests on {device}: {t['summary']} ({t['seconds']} s){'; ' + t['note'] if t['note'] else ''}",
              flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        parts = Path(tmp)
        for stage in STAGE_ORDER:
            report["stages"].append(run_stage(stage, parts, args.smoke, deadlines[stage]))
        race, layer_rows, varlen_rows, e2e_rows = (read_parts(parts, s) for s in STAGE_ORDER)
    sass = sass_job.collect(total - (time.perf_counter() - start))
    sass["arch_reason"] = arch_why

    layers = pd.DataFrame(layer_rows)
    e2e = pd.DataFrame(e2e_rows)
    varlen = pd.DataFrame(varlen_rows)
    if not layers.empty:
        nn_ms = layers[layers["provider"] == "nn"].set_index(LAYER_KEY)["ms"]
        layers["speedup_vs_nn"] = [nn_ms.get(k, math.nan) / ms for k, ms in zip(
            zip(*(layers[c] for c in LAYER_KEY)), layers["ms"])]
    layers.to_csv(out / "timings.csv", index=False)
    e2e.to_csv(out / "e2e.csv", index=False)
    varlen.to_csv(out / "varlen.csv", index=False)
    acc = accuracy_table(pd.concat([layers, varlen.assign(cell="lstm", shape="varlen")] if not varlen.empty
                                   else [layers]))
    report.update({"race": race, "accuracy": acc.to_dict("records"), "sass": sass,
                   "seconds": round(time.perf_counter() - start, 1)})
    (out / "checks.json").write_text(json.dumps(report, indent=2, default=str))

    race_ok = bool(race) and all(r["bit_identical"] for r in race)
    bad_acc = acc[~acc["ok"]]
    stage_fail = [s for s in report["stages"] if s["exit_code"] != 0]
    timed = "median µs per time step (do_bench); (speedup vs torch.nn of the same cell)" if device.type == "cuda" else \
        "µs per time step (interpreter: correctness run, not a timing)"
    lines = [f"device: {machine['device']} | torch {machine['torch']} | triton {machine['triton']} | "
             f"cuDNN {machine['cudnn']} | interpreter {machine['interpreter']} | {report['seconds']} s",
             "stages: " + ", ".join(f"{s['stage']} {'ok' if not s['exit_code'] else s['note']} ({s['seconds']} s)"
                                    for s in report["stages"])]
    if "tests" in report:
        t = report["tests"]
        lines.append(f"tests: exit {t['exit_code']}: {t['summary']}" + (f" ({t['note']})" if t["note"] else ""))
    lines += [f"race check (persistent, repeated runs bit-identical): {'PASS' if race_ok else 'FAIL'} "
              f"({len(race)} cases)",
              "accuracy vs float64 torch.nn of the same cell (forward; varlen: forward+backward on the "
              "PackedSequence): " + ("all within tolerance" if bad_acc.empty else
                                     "FAIL " + bad_acc.to_string(index=False)),
              "", f"SASS, {sass['arch']} ({sass['arch_reason']}), d2l and large configurations:", sass_table(sass),
              "", "end-to-end d2l char LM (identical weights; tokens/s median epoch):", e2e_table(e2e),
              "", "variable-length batch (" + _varlen_caption(varlen) + "), ms per batch call (÷ B for ms per "
              "sequence) "
              + ("(do_bench median)" if device.type == "cuda" else "(interpreter: correctness run, not a timing)")
              + ":", varlen_table(varlen, device.type == "cuda"),
              "", timed + ":", per_step_table(layers)]
    summary = "\n".join(lines)
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    tests_failed = report.get("tests", {}).get("exit_code", 0) != 0
    return 1 if (tests_failed or not race_ok or not bad_acc.empty or stage_fail) else 0


if __name__ == "__main__":
    sys.exit(main())
