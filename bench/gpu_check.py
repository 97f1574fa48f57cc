"""The GPU check: correctness on CUDA, race and deadlock checks of the persistent level, per-step
timings of every level against nn.LSTM (three precisions) and nn.GRU (TF32, bf16), end-to-end d2l
tokens/s, and the SASS tensor-core columns — one command, under 8 minutes on an H200, no network.

    python -m bench.gpu_check --out results/gpu          # on a CUDA machine (bench/gpu_check.sh)
    python -m bench.gpu_check --out /tmp/x --smoke       # CPU, interpreter, tiny shapes (CI)

Stages, each with a deadline (the deadlock guard: a hung kernel costs its stage, not the run):
``tests`` (this project's Triton tests on CUDA and every test file that marks a test ``cuda``, on
pytest-xdist workers, one per core up to 16), ``sass`` (lstm_triton.layers.kernel_report --rated for
the device's architecture: the d2l/large builds, compiled and disassembled on the CPU beside the
tests), ``race``, ``layers``, ``varlen`` (variable-length batches: B=64, H=512, T=1024, lengths
uniform in [256, 1024]) and ``e2e`` (bench/gpu_stages.py, one subprocess each). The tests and the
race check run with LSTM_TRITON_CHECK_BARRIER=1 (a host read after every persistent call); the timed
stages never do. Without a GPU (and without --smoke) the tests only collect and the CUDA stages skip
with their reason, while the SASS stage and the summary run for real (bench/rehearse_gpu_check.sh).

Writes into --out (default ``$OUT`` or results/gpu; at most 7 files, gpu_check.sh's log the 8th):
tests.log, checks.json (machine, stage status, tests, race, accuracy, SASS rows), timings.csv,
varlen.csv, e2e.csv, kernel_report.json, summary.txt, all rewritten after every stage (a run stopped
at any point leaves its table); prints the summary, per-step table last. Exit status 1 when a test,
the race check, an accuracy check or a stage failed or ran out of time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
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
from bench.peers import PEERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = ["tests/test_lstm_triton.py", "tests/test_lstm_math.py", "tests/test_lstm_api.py",
              "tests/test_train_triton.py", "tests/test_persistent_multiprogram.py", "tests/test_packed.py",
              "tests/test_projection.py", "tests/test_gru_rnn.py", "tests/test_precision.py",
              # CUDA graphs and the device guard (two GPUs where present): picked up once they exist
              "tests/test_cuda_graphs.py", "tests/test_device_guard.py"]
CUDA_MARK = "pytest.mark.cuda"  # any other test file that marks a test so runs whole in the tests stage
# Seconds per stage on the H200 machine (16 cores) with a cold Triton cache, sized from what
# bench/gpu_stage_builds.py measured on a 2-core CPU shared with two other compiling users, Triton
# 3.6, sm_90: a cold build costs ~1.1 CPU-seconds (race 6 builds 8.8 CPU-s, layers 38 in 35, varlen
# 8 in 13, e2e none new; 176 representative builds in 217; the 8 rated ones with their SASS in ~16).
# A stage compiles in one process, one build after another; a JIT launch may compile a configuration
# twice (integer arguments divisible by 16 or not), so up to 2x that. tests: ~300 variants (~330
# CPU-s) over 16 xdist workers is ~20 s if perfectly spread, 40-60 s with duplicates and imbalance,
# plus each worker's start (~10 s) and the GPU's time: ~60-100 s against 150. race: <=18 s of
# compiling, 5 repeats of 3 cases: 30. layers: 35-70 s of compiling, ~80 do_bench timings and the
# float64 references: 150. varlen <=26 s of compiling: 30. e2e reuses the layers' kernels: 45 for
# its 21 short epochs. The SASS stage (8 rated builds, ~5 s there) runs beside the tests and is
# collected after them. Sequential deadlines add up to 405 s; with gpu_check.sh's guard (435 s) and
# ~20 s of preflight and install a cold run stays under 8 minutes even if every stage hits its
# deadline, and a typical cold one (~4-5 min) leaves a retry inside the device's 15 minutes.
GPU_DEADLINES = {"tests": 150, "race": 30, "layers": 150, "varlen": 30, "e2e": 45, "sass": 150}
SMOKE_DEADLINES = {"race": 300, "layers": 300, "varlen": 300, "e2e": 300}  # a busy 2-core CPU, the interpreter
STAGE_ORDER = ("race", "layers", "varlen", "e2e")
# The peers (bench/peers/, where their packages are installed) run last, after everything of ours
# has been written: inductor compiles each shape, FlashRNN runs nvcc per configuration, so the stage
# may meet its deadline or gpu_check.sh's guard; what it measured joins the layers' table, and
# neither its errors nor its deadline fail the check (they are the peers' findings, not ours).
PEER_STAGE, PEER_DEADLINE = "peers", {"gpu": 120, "smoke": 300}
CHECKS_CORRECTNESS = {"tests", "race"}  # stages run with LSTM_TRITON_CHECK_BARRIER=1; never the timed ones
TOTAL_S = {"gpu": 435, "smoke": 900}
MAX_TEST_WORKERS = 16  # the H200 machine's cores; each worker holds a CUDA context (~0.5 GiB)
LAYER_KEY = ["cell", "shape", "precision", "mode"]  # a layer timing row; its speedup is over nn's row of the same key
OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")


def stage_env(stage: str) -> dict:
    """The environment of a stage's subprocess: TRITON_INTERPRET unset on CUDA, and the host's
    barrier check (a device-to-host read after every persistent call) only where the stage checks
    correctness; a timed stage never pays it (nn.LSTM's timings do not)."""
    env = dict(os.environ)
    if torch.cuda.is_available():
        env.pop("TRITON_INTERPRET", None)
    if stage in CHECKS_CORRECTNESS:
        env["LSTM_TRITON_CHECK_BARRIER"] = "1"
    else:
        env.pop("LSTM_TRITON_CHECK_BARRIER", None)
    return env


def cuda_test_files() -> tuple[list[str], list[str]]:
    """(present, absent): CUDA_TESTS, plus every tests/test_*.py that marks a test ``cuda``."""
    marked = sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py") if CUDA_MARK in p.read_text())
    wanted = list(dict.fromkeys([*CUDA_TESTS, *marked]))
    return [t for t in wanted if (ROOT / t).exists()], [t for t in wanted if not (ROOT / t).exists()]


def test_workers() -> int:
    """pytest-xdist workers: one per core, at most MAX_TEST_WORKERS (GPU_CHECK_TEST_WORKERS overrides;
    0 runs in one process); 0 when pytest-xdist is missing."""
    if os.environ.get("GPU_CHECK_TEST_WORKERS"):
        return int(os.environ["GPU_CHECK_TEST_WORKERS"])
    try:
        import xdist  # noqa: F401
    except ImportError:
        return 0
    return max(1, min(os.cpu_count() or 1, MAX_TEST_WORKERS))


def xdist_mode() -> str:
    """worksteal (pytest-xdist >= 3.2: contiguous chunks per worker, so a worker's tests share their
    kernel variants, then idle workers steal), else load."""
    try:
        from xdist import __version__
        major, minor = (int(x) for x in __version__.split(".")[:2])
        return "worksteal" if (major, minor) >= (3, 2) else "load"
    except (ImportError, ValueError):
        return "load"


def run_group(cmd: list[str], log_path: Path, env: dict, timeout_s: float) -> tuple[int, bool]:
    """``cmd`` in its own process group, output to ``log_path`` as it comes; at the deadline the whole
    group (pytest-xdist workers included) is killed. Returns (exit code, timed out)."""
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _CHILDREN.append(proc)
        try:
            return proc.wait(timeout=max(timeout_s, 1)), False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return 124, True
        finally:
            _CHILDREN.remove(proc)


_CHILDREN: list[subprocess.Popen] = []


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def count_outcomes(log: str) -> dict[str, dict[str, int]]:
    """Per test file, how many tests PASSED, FAILED, ... in pytest -v output (with or without xdist;
    a log cut off at a deadline gives what had finished)."""
    counts: dict[str, dict[str, int]] = {}
    word = "|".join(OUTCOMES)
    pattern = re.compile(rf"(?:\b({word})\s+(tests/[^\s:]+\.py)::|(tests/[^\s:]+\.py)::\S+\s+({word})\b)")
    for line in log.splitlines():
        if "short test summary info" in line:  # -ra repeats FAILED/ERROR lines there
            break
        m = pattern.search(line)
        if m:
            outcome, path = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            counts.setdefault(path, dict.fromkeys(OUTCOMES, 0))[outcome] += 1
    return counts


def count_collected(log: str) -> dict[str, int]:
    """Per test file, the tests pytest --collect-only -q listed."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        if re.match(r"tests/[^\s:]+\.py::", line):
            path = line.split("::", 1)[0]
            counts[path] = counts.get(path, 0) + 1
    return counts


def run_tests(out: Path, timeout_s: int) -> dict:
    """This project's Triton tests on CUDA (fp32 and bf16) on every core (pytest-xdist, each worker
    stealing from the others' queues once its own is done), in a process group with a deadline. Without
    a GPU the tests only collect (imports, fixtures and parametrization checked in this environment)
    and the stage says why. A named test file not in this checkout is left out with a note."""
    present, absent = cuda_test_files()
    workers = test_workers()
    cuda = torch.cuda.is_available()
    log_path = out / "tests.log"
    note = f"not in this checkout, skipped: {', '.join(absent)}" if absent else ""
    log_path.write_text(f"NOTE: {note}\n" if note else "")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *present]
    if cuda:
        cmd += ["-v", "-ra", *(["-n", str(workers), "--dist", xdist_mode()] if workers else [])]
    else:
        cmd += ["--collect-only", "-q"]
    start = time.perf_counter()
    with open(log_path, "a") as f:
        f.write("$ " + " ".join(cmd[1:]) + "\n")
    code, timed_out = run_group(cmd, log_path, stage_env("tests"), timeout_s)
    seconds = round(time.perf_counter() - start, 1)
    if timed_out:
        with open(log_path, "a") as f:
            f.write(f"\nTIMEOUT after {timeout_s} s (deadlock guard); the counts are what had finished\n")
    log = log_path.read_text()
    lines = [line for line in log.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    result = {"exit_code": code, "seconds": seconds, "files": present, "note": note, "workers": workers if cuda else 0,
              "summary": f"TIMEOUT after {timeout_s} s" if timed_out else last.strip("= ")}
    if cuda:
        result["per_file"] = count_outcomes(log)
    else:
        result.update(skipped=True, per_file={k: {"collected": v} for k, v in count_collected(log).items()},
                      reason="no CUDA device: the tests only collected here")
    return result


def run_stage(stage: str, parts: Path, smoke: bool, timeout_s: float) -> dict:
    """One bench.gpu_stages stage in a subprocess; its output goes to this process's stdout."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.gpu_stages", stage, "--parts", str(parts)] + (["--smoke"] if smoke else [])
    barrier = "; host barrier check" if stage in CHECKS_CORRECTNESS else ""
    print(f"stage {stage} (deadline {timeout_s:.0f} s{barrier})", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=stage_env(stage), start_new_session=True)
    _CHILDREN.append(proc)
    try:
        code = proc.wait(timeout=max(timeout_s, 1))
        note = "" if code == 0 else f"exited {code}"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code, note = 124, f"TIMEOUT after {timeout_s:.0f} s (deadlock guard); partial results kept"
    finally:
        _CHILDREN.remove(proc)
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
    providers = [p for p in LAYER_PROVIDERS + PEERS if p in set(layers["provider"])]
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


def tests_table(t: dict) -> str:
    """Per test file: passed/failed/skipped (or, without a GPU, how many collected)."""
    per_file = t.get("per_file") or {}
    if not per_file:
        return ""
    new = {"tests/test_cuda_graphs.py", "tests/test_device_guard.py"}
    if t.get("skipped"):
        rows = [[f, str(c["collected"])] for f, c in per_file.items()]
        return _text_table(["file", "collected"], rows, left=1)
    rows = [[f + (" (new)" if f in new else ""), str(c["PASSED"] + c["XPASS"]), str(c["FAILED"] + c["ERROR"]),
             str(c["SKIPPED"] + c["XFAIL"])] for f, c in sorted(per_file.items())]
    return _text_table(["file", "passed", "failed", "skipped"], rows, left=1)


class Check:
    """What the run has so far; :meth:`write` rewrites summary.txt, checks.json and the CSVs from it
    after every stage, so a run stopped at any point (its deadline, gpu_check.sh's guard) still
    leaves its table."""

    def __init__(self, out: Path, parts: Path, device: torch.device, smoke: bool, arch: str, arch_why: str):
        self.out, self.parts, self.device, self.smoke = out, parts, device, smoke
        self.start = time.perf_counter()
        self.report: dict = {"machine": machine_info(device), "stages": [],
                             "sass": {"arch": arch, "arch_reason": arch_why, "rows": [], "note": "compiling"}}

    def write(self, final: bool = False) -> tuple[str, bool]:
        """Rewrite the files from what has run; returns (summary, whether everything that ran passed)."""
        out, report, device = self.out, self.report, self.device
        race, layer_rows, varlen_rows, e2e_rows = (read_parts(self.parts, s) for s in STAGE_ORDER)
        layer_rows += read_parts(self.parts, PEER_STAGE)
        layers, e2e, varlen = pd.DataFrame(layer_rows), pd.DataFrame(e2e_rows), pd.DataFrame(varlen_rows)
        if not layers.empty:
            nn_ms = layers[layers["provider"] == "nn"].set_index(LAYER_KEY)["ms"]
            layers["speedup_vs_nn"] = [nn_ms.get(k, math.nan) / ms for k, ms in zip(
                zip(*(layers[c] for c in LAYER_KEY)), layers["ms"])]
        layers.to_csv(out / "timings.csv", index=False)
        e2e.to_csv(out / "e2e.csv", index=False)
        varlen.to_csv(out / "varlen.csv", index=False)
        acc = accuracy_table(pd.concat([layers, varlen.assign(cell="lstm", shape="varlen")] if not varlen.empty
                                       else [layers]))
        report.update({"race": race, "accuracy": acc.to_dict("records"),
                       "seconds": round(time.perf_counter() - self.start, 1), "complete": final})
        (out / "checks.json").write_text(json.dumps(report, indent=2, default=str))

        ran = {s["stage"]: s for s in report["stages"]}
        race_ran = "race" in ran and not ran["race"].get("skipped")
        race_ok = bool(race) and all(r["bit_identical"] and not r.get("barrier_timeouts") for r in race)
        bad_acc = acc[~acc["ok"] & ~acc["provider"].isin(PEERS)]
        stage_fail = [s for s in report["stages"] if s["exit_code"] != 0 and s["stage"] != PEER_STAGE]
        cuda = device.type == "cuda"
        machine, sass = report["machine"], report["sass"]
        rocm = machine.get("hip", "n/a") != "n/a"  # a ROCm torch: nn's RNNs and the baseline are MIOpen's
        timed = ("median µs per time step (do_bench); (speedup vs torch.nn of the same cell"
                 + (", MIOpen)" if rocm else ")")) if cuda else \
            "µs per time step (interpreter: correctness run, not a timing)"
        pending = [s for s in ("race", *STAGE_ORDER[1:]) if s not in ran]
        lines = [f"device: {machine['device']} | torch {machine['torch']} | triton {machine['triton']} | "
                 + (f"ROCm {machine['hip']} | MIOpen {machine['cudnn']}" if rocm else f"cuDNN {machine['cudnn']}")
                 + f" | interpreter {machine['interpreter']} | {report['seconds']} s"
                 + ("" if final else f" | INCOMPLETE: not yet run: {', '.join(pending) or 'summary'}"),
                 "stages: " + _stage_words(report)]
        if "tests" in report:
            t = report["tests"]
            head = (f"tests: SKIPPED ({t['reason']}): {t['summary']}" if t.get("skipped") else
                    f"tests ({t['workers'] or 'no'} xdist workers, {t['seconds']} s): exit {t['exit_code']}: "
                    f"{t['summary']}")
            lines.append(head + (f" ({t['note']})" if t["note"] else ""))
            table = tests_table(t)
            lines += [table] if table else []
        race_word = ("PASS" if race_ok else "FAIL") if race_ran else "skipped" if "race" in ran else "not run"
        lines += [f"race check (persistent, repeated runs bit-identical, no barrier timed out): {race_word} "
                  f"({len(race)} cases)",
                  "accuracy vs float64 torch.nn of the same cell (forward; varlen: forward+backward on the "
                  "PackedSequence): " + ("all within tolerance" if bad_acc.empty else
                                         "FAIL " + bad_acc.to_string(index=False)),
                  "", f"{'AMDGCN' if sass['arch'].startswith('gfx') else 'SASS'}, {sass['arch']} "
                  f"({sass['arch_reason']}), d2l and large configurations"
                  + (f" ({sass['builds']} builds compiled cold-or-cached in {sass['seconds']} s)"
                     if "seconds" in sass and "builds" in sass else "") + ":", sass_table(sass),
                  "", "end-to-end d2l char LM (identical weights; tokens/s median epoch):", e2e_table(e2e),
                  "", "variable-length batch (" + _varlen_caption(varlen) + "), ms per batch call (÷ B for ms per "
                  "sequence) " + ("(do_bench median)" if cuda else "(interpreter: correctness run, not a timing)")
                  + ":", varlen_table(varlen, cuda),
                  "", timed + ":", per_step_table(layers)]
        summary = "\n".join(lines)
        (out / "summary.txt").write_text(summary + "\n")
        tests_failed = report.get("tests", {}).get("exit_code", 0) != 0
        ok = not (tests_failed or (race_ran and not race_ok) or not bad_acc.empty or stage_fail)
        return summary, ok


def _stage_words(report: dict) -> str:
    """Every stage's outcome and wall time, set-up (from gpu_check.sh) and tests first."""
    words = [f"preflight+install {os.environ['GPU_CHECK_SETUP_S']} s"] if os.environ.get("GPU_CHECK_SETUP_S") else []
    if "tests" in report:
        t = report["tests"]
        words.append(f"tests {'collect-only' if t.get('skipped') else 'ok' if not t['exit_code'] else 'FAILED'} "
                     f"({t['seconds']} s)")
    sass = report["sass"]
    if "seconds" in sass:
        words.append(f"sass {'ok' if sass['rows'] else 'no rows'} ({sass['seconds']} s, beside the tests)")
    skipped = [s for s in report["stages"] if s.get("skipped")]
    words += [f"{s['stage']} {'ok' if not s['exit_code'] else s['note']} ({s['seconds']} s)"
              for s in report["stages"] if not s.get("skipped")]
    if skipped:
        words.append(f"{', '.join(s['stage'] for s in skipped)} skipped ({skipped[0]['note']})")
    return ", ".join(words)


def run_peer_stage(check: Check, parts: Path, device: torch.device, smoke: bool) -> None:
    """The peers' stage, last (see PEER_STAGE): on CUDA or in --smoke, else skipped with the reason."""
    if device.type == "cuda" or smoke:
        check.report["stages"].append(run_stage(PEER_STAGE, parts, smoke, PEER_DEADLINE["smoke" if smoke else "gpu"]))
    else:
        check.report["stages"].append({"stage": PEER_STAGE, "exit_code": 0, "seconds": 0.0, "skipped": True,
                                       "note": "no CUDA device; --smoke runs them on the CPU"})
        print(f"stage {PEER_STAGE}: skipped (no CUDA device)", flush=True)
    check.write()


def _on_sigterm(signum, frame):  # gpu_check.sh's guard: stop the children (own process groups) too
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "results/gpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no CUDA tests (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    deadlines, total = (SMOKE_DEADLINES, TOTAL_S["smoke"]) if args.smoke else (GPU_DEADLINES, TOTAL_S["gpu"])
    arch, arch_why = device_arch()
    # the rated builds only (kernel_report --rated): compiled on the CPU beside the tests
    sass_job = SassReport(out / "kernel_report.json", arch)
    parts = Path(tempfile.mkdtemp(prefix="gpu_check_parts_"))
    check = Check(out, parts, device, args.smoke, arch, arch_why)
    signal.signal(signal.SIGTERM, _on_sigterm)

    def collect_sass(wait_s: float) -> None:
        check.report["sass"] = {**sass_job.collect(wait_s), "arch_reason": arch_why}
        s = check.report["sass"]
        print(f"stage sass: {len(s['rows'])} rated rows of {s.get('builds', 0)} builds in {s.get('seconds', '?')} s"
              + (f"; {s['note']}" if s.get("note") else ""), flush=True)
        check.write()

    try:
        check.write()
        if not args.smoke:
            check.report["tests"] = t = run_tests(out, deadlines["tests"])
            print(f"tests on {device}: {t['summary']} ({t['seconds']} s)" + (f"; {t['note']}" if t["note"] else ""),
                  flush=True)
            check.write()
            collect_sass(deadlines["sass"] - (time.perf_counter() - sass_job.start))
        for stage in STAGE_ORDER:
            if cuda or args.smoke:
                check.report["stages"].append(run_stage(stage, parts, args.smoke, deadlines[stage]))
            else:
                check.report["stages"].append({"stage": stage, "exit_code": 0, "seconds": 0.0, "skipped": True,
                                               "note": "no CUDA device; --smoke runs them on the CPU"})
                print(f"stage {stage}: skipped (no CUDA device)", flush=True)
            check.write()
        run_peer_stage(check, parts, device, args.smoke)
        if args.smoke:
            collect_sass(total - (time.perf_counter() - check.start))
        summary, ok = check.write(final=True)
    finally:
        sass_job.kill()
        for proc in list(_CHILDREN):
            _kill_group(proc)
        shutil.rmtree(parts, ignore_errors=True)
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
