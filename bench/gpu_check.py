"""The GPU check: correctness on CUDA, race and deadlock checks of the persistent level, and a
short timing table of every level against nn.LSTM — one script, a few minutes, no network.

    python -m bench.gpu_check --out results/gpu          # on a CUDA machine (bench/gpu_check.sh)
    python -m bench.gpu_check --out /tmp/x --smoke       # CPU, interpreter, tiny shapes (CI)

Writes tests.log, checks.json, timings.csv and summary.txt into --out, and prints the table last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pandas as pd  # noqa: E402

from bench.machine import machine_info  # noqa: E402
from bench.measure import make_inputs, operation, rel_err  # noqa: E402
from bench.providers import build_layer, reference_weights, status  # noqa: E402

LEVELS = ("triton-cell", "triton-step", "triton-persistent")
CUDA_TESTS = ["tests/test_lstm_triton.py", "tests/test_lstm_math.py", "tests/test_lstm_api.py",
              "tests/test_train_triton.py"]
# (name, T, B, I, H, dtypes): the d2l shape, the cuDNN/FlashRNN comparison point, a mid size.
GPU_SHAPES = [("d2l", 35, 32, 28, 256, ("fp32", "bf16")), ("large", 1024, 16, 768, 768, ("bf16", "fp32")),
              ("mid", 256, 16, 256, 512, ("bf16",))]
SMOKE_SHAPES = [("tiny", 6, 3, 5, 20, ("fp32",))]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def run_tests(out: Path, timeout_s: int) -> dict:
    """This project's Triton tests on CUDA (fp32 and bf16), in a subprocess with a deadline."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS],
                              capture_output=True, text=True, env=env, timeout=timeout_s)
        log, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        log, code = f"{exc.stdout or ''}\nTIMEOUT after {timeout_s} s (deadlock guard)", 124
    (out / "tests.log").write_text(log)
    last = [line for line in log.strip().splitlines() if line.strip()][-1:] or [""]
    return {"exit_code": code, "summary": last[0], "seconds": round(time.perf_counter() - start, 1)}


def race_check(provider: str, shape, dtype: torch.dtype, device, repeats: int) -> dict:
    """Same inputs ``repeats`` times: outputs and every gradient must be bit-identical."""
    name, T, B, I, H = shape
    layer = build_layer(provider, reference_weights(I, H), device, dtype)
    results = []
    for _ in range(repeats):
        inputs = make_inputs(T, B, I, H, device, dtype, seed=3)
        out, (h, c) = layer(inputs.x, (inputs.h0, inputs.c0))
        out.backward(inputs.dy)
        tensors = [out, h, c, inputs.x.grad, inputs.h0.grad, inputs.c0.grad] + [p.grad for p in layer.parameters()]
        results.append([t.detach().clone() for t in tensors])
        layer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()  # surfaces a barrier timeout (device-side assert) here
    identical = all(torch.equal(a, b) for run in results[1:] for a, b in zip(results[0], run))
    return {"provider": provider, "shape": name, "dtype": str(dtype), "repeats": repeats, "bit_identical": identical}


@lru_cache(maxsize=2)
def _expected_output(T: int, B: int, I: int, H: int) -> torch.Tensor:
    weights = reference_weights(I, H)
    ref = build_layer("nn", {k: v.double() for k, v in weights.items()}, "cpu", torch.float64)
    inputs = make_inputs(T, B, I, H, "cpu", torch.float64)
    with torch.no_grad():
        return ref(inputs.x, (inputs.h0, inputs.c0))[0]


def accuracy(provider: str, shape, dtype: torch.dtype, device) -> float:
    """Forward output vs nn.LSTM in float64 on the CPU (relative error)."""
    name, T, B, I, H = shape
    expected = _expected_output(T, B, I, H)
    inputs = make_inputs(T, B, I, H, "cpu", torch.float64)
    with torch.no_grad():
        layer = build_layer(provider, reference_weights(I, H), device, dtype)
        got, _ = layer(inputs.x.to(device, dtype), (inputs.h0.to(device, dtype), inputs.c0.to(device, dtype)))
    return rel_err(got, expected)


def time_case(provider: str, mode: str, shape, dtype: torch.dtype, device) -> float | None:
    """Median milliseconds (triton.testing.do_bench on CUDA; one timed run elsewhere)."""
    name, T, B, I, H = shape
    layer = build_layer(provider, reference_weights(I, H), device, dtype)
    run = operation(mode, layer, make_inputs(T, B, I, H, device, dtype, seed=1), device)
    run()  # compile and warm up
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(run, warmup=10, rep=60, return_mode="median"))
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "results/gpu"))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, no test run (CPU/CI)")
    parser.add_argument("--test-timeout", type=int, default=240)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = machine_info(device)
    shapes = SMOKE_SHAPES if args.smoke else GPU_SHAPES
    report: dict = {"machine": machine}
    if not args.smoke:
        report["tests"] = run_tests(out, args.test_timeout)
        print(f"tests on {device}: {report['tests']['summary']} ({report['tests']['seconds']} s)", flush=True)

    report["race"], rows = [], []
    for name, T, B, I, H, dtypes in shapes:
        shape = (name, T, B, I, H)
        for dname in dtypes:
            dtype = DTYPES[dname]
            if status("triton-persistent", device, dtype).available:
                report["race"].append(race_check("triton-persistent", shape, dtype, device, repeats=3 if args.smoke
                                                 else 5))
            for provider in ("nn", *LEVELS) + (("naive",) if name == "d2l" else ()):
                st = status(provider, device, dtype)
                if not st.available:
                    continue
                err = accuracy(provider, shape, dtype, device)
                for mode in ("forward", "forward_backward"):
                    ms = time_case(provider, mode, shape, dtype, device)
                    rows.append({"shape": name, "T": T, "B": B, "H": H, "dtype": dname, "mode": mode,
                                 "provider": provider, "ms": ms, "rel_err": err, "interpreted": st.interpreted})
                    print(f"  {name:5s} {dname} {mode:16s} {provider:17s} {ms:9.3f} ms  err {err:.1e}", flush=True)
    df = pd.DataFrame(rows)
    nn_ms = df[df["provider"] == "nn"].set_index(["shape", "dtype", "mode"])["ms"]
    df["speedup_vs_nn"] = [nn_ms.get((s, d, m), float("nan")) / ms
                           for s, d, m, ms in zip(df["shape"], df["dtype"], df["mode"], df["ms"])]
    df.to_csv(out / "timings.csv", index=False)
    (out / "checks.json").write_text(json.dumps(report, indent=2, default=str))
    table = df.pivot_table(index=["shape", "dtype", "mode"], columns="provider", values="ms").round(3)
    race_ok = all(r["bit_identical"] for r in report["race"])
    lines = [f"device: {machine['device']} | torch {machine['torch']} | triton {machine['triton']} | "
             f"cuDNN {machine['cudnn']} | interpreter {machine['interpreter']}"]
    if "tests" in report:
        lines.append(f"tests: exit {report['tests']['exit_code']}: {report['tests']['summary']}")
    lines += [f"race check (persistent, repeated runs bit-identical): {'PASS' if race_ok else 'FAIL'} "
              f"({len(report['race'])} cases)", "median ms (do_bench):" if device.type == "cuda" else
              "ms (interpreter: correctness run, not a timing):", table.to_string()]
    summary = "\n".join(lines)
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    failed = (report.get("tests", {}).get("exit_code", 0) != 0) or not race_ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
