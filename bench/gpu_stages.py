"""The GPU check's measuring stages, each run in its own process so a deadline can stop it.

    python -m bench.gpu_stages STAGE --parts DIR [--smoke]     (bench/gpu_check.py calls this)

Stages (each appends JSON records to ``DIR/STAGE.jsonl`` as it goes, so a stage stopped at its
deadline still leaves what it measured):

- ``race``: the persistent level run repeatedly on the same inputs (LSTM and GRU); outputs and
  every gradient must be bit-identical (a missing barrier shows up as run-to-run differences).
- ``layers``: microseconds per time step (forward, forward+backward; ``triton.testing.do_bench``
  medians on CUDA) for torch.nn and every Triton level, per cell (the LSTM in three precisions:
  fp32 with IEEE dots — ``torch.backends.cudnn.allow_tf32`` and
  ``torch.backends.cuda.matmul.allow_tf32`` False —, fp32 with TF32 (both True) and bf16; the GRU
  in the two its targets name, TF32 and bf16), plus each forward output's error against float64
  torch.nn of the same cell.
- ``varlen``: the variable-length target case (B=64, I=H=512, T=1024, lengths uniform in
  [256, 1024], seeded; bench/varlen.py), fp32 with TF32 and bf16, forward and forward+backward:
  milliseconds per batch for nn.LSTM on the PackedSequence, nn.LSTM on the same data padded
  (lengths ignored), ours on the PackedSequence (fusion auto) and ours padded with ``lengths=``,
  and each one's largest error (output, h_n, c_n, every gradient) against float64 nn.LSTM on the
  PackedSequence (nn padded: its output at real steps only).
- ``e2e``: the d2l char LM for a few epochs per implementation from identical weights
  (``lstm_triton.charlm.train.Trainer``): median epoch tokens/s and perplexity.
- ``peers``: the peers whose packages are present (bench/peers/: torch.compile of the naive loop,
  TorchRL's Triton LSTM/GRU, FlashRNN) at the d2l and large shapes, TF32 and bf16, in the layers'
  record format plus ``backend`` and ``first_call_s`` (construction to first forward+backward
  finished, compilation included); a peer that cannot run is printed with its reason. Its rows
  join the layers' table; their errors are reported, never failed (gpu_check).

``--smoke`` runs every stage at tiny sizes on the CPU (Triton under the interpreter: correctness
runs, not timings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel is imported

from bench.measure import make_inputs, operation, rel_err  # noqa: E402
from bench.providers import build_layer, fusion_ran, reference_weights, status  # noqa: E402

LEVELS = ("triton-cell", "triton-step", "triton-persistent")
LAYER_PROVIDERS = ("nn", *LEVELS)
# (name, T, B, I, H): the d2l shape and the cuDNN/FlashRNN comparison point.
GPU_SHAPES = (("d2l", 35, 32, 28, 256), ("large", 1024, 16, 768, 768))
SMOKE_SHAPES = (("tiny", 3, 3, 5, 20),)
# precision -> (dtype, TF32 switches: True/False, or None to leave them as they are)
PRECISIONS = {"fp32-ieee": (torch.float32, False), "fp32-tf32": (torch.float32, True), "bf16": (torch.bfloat16, None)}
# Relative error vs float64 (DESIGN.md): exact fp32 dots 1e-5, tf32 1e-3, bf16 1e-2.
TOLERANCE = {"fp32-ieee": 1e-5, "fp32-tf32": 1e-3, "bf16": 1e-2}
# cell -> the precisions its layer timings run in: the GRU's targets name the d2l shape (TF32, what
# cuDNN does for fp32 by default) and bf16; fp32-IEEE would only repeat the LSTM's lesson.
CELL_PRECISIONS = {"lstm": tuple(PRECISIONS), "gru": ("fp32-tf32", "bf16")}
# (label, impl, fusion, epochs): "naive briefly"; epoch 1 includes compilation, hence the median.
GPU_E2E = (("nn", "nn", "auto", 6), ("triton-auto", "triton", "auto", 6),
           ("triton-persistent", "triton", "persistent", 6), ("naive", "naive", "auto", 3))
# --smoke (make test's budget): one epoch each, so that all four are compared at the same epoch
SMOKE_E2E = (("nn", "nn", "auto", 1), ("triton-auto", "triton", "auto", 1),
             ("triton-persistent", "triton", "persistent", 1), ("naive", "naive", "auto", 1))
# (T, B, I, H) of the variable-length case; precisions it runs in (cuDNN's default for fp32 is TF32)
VARLEN_GPU = (1024, 64, 512, 512)
VARLEN_SMOKE = (8, 3, 5, 6)
VARLEN_PRECISIONS = ("fp32-tf32", "bf16")
VARLEN_STAGE_PROVIDERS = ("nn", "nn-padded", "triton-auto", "triton-padded")
SMOKE_E2E_SIZES = {"hidden_size": 16, "batch_size": 4, "num_steps": 6, "max_tokens": 100, "val_tokens": 60}


@contextmanager
def tf32_switches(enabled: bool | None):
    """Set the switches users flip for TF32 — cuDNN's (nn.LSTM follows it) and cuBLAS matmul's (the
    GEMMs around our kernels) — and restore both afterwards. None leaves them as they are."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    if enabled is not None:
        cudnn.allow_tf32 = matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def triton_dot_precision(dtype: torch.dtype) -> str:
    """What our launchers pick for tl.dot under the current switches ("unknown" if the launcher's
    helper changed: this column is a record, the timing does not depend on it)."""
    try:
        from lstm_triton.kernels.launch_config import dot_precision

        return str(dot_precision(dtype))
    except (ImportError, TypeError):
        return "unknown"


def _append(parts: Path, stage: str, record: dict) -> None:
    with open(parts / f"{stage}.jsonl", "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    print(f"  [{stage}] " + " ".join(f"{k}={_short(v)}" for k, v in record.items()), flush=True)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _runnable(stage: str, label: str, precisions, providers, status_fn, device):
    """Each (precision, dtype, provider, status) of a stage that can run here, yielded inside its
    precision's TF32 switches; the others are skipped with their reason."""
    for precision in precisions:
        dtype, tf32 = PRECISIONS[precision]
        for provider in providers:
            st = status_fn(provider, device, dtype)
            if not st.available:
                what = " ".join(filter(None, (label, precision, provider)))
                print(f"  [{stage}] skip {what}: {st.reason}", flush=True)
                continue
            with tf32_switches(tf32):
                yield precision, dtype, provider, st


def _precision_fields(precision: str, st) -> dict:
    """What every timing record says about how it ran: tolerance, interpreter, TF32 switches."""
    return {"tolerance": TOLERANCE[precision], "interpreted": st.interpreted,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # every launch finished before a clock or a result is read


# ----------------------------------------------------------------------------------------- race


def race_check(provider: str, shape, dtype: torch.dtype, device, repeats: int, cell: str = "lstm") -> dict:
    """Same inputs ``repeats`` times: outputs and every gradient must be bit-identical, and (with
    the host barrier check this stage runs under) no grid barrier may have timed out: a timed-out
    call is recomputed at the step level, so it would be right but not the persistent kernel's."""
    from lstm_triton.kernels import lstm_persistent

    timeouts_before = lstm_persistent.barrier_timeouts
    name, T, B, I, H = shape
    layer = build_layer(provider, reference_weights(I, H, cell=cell), device, dtype, cell)
    results = []
    for _ in range(repeats):
        inputs = make_inputs(T, B, I, H, device, dtype, seed=3, cell=cell)
        out, state = layer(inputs.x, inputs.hx)
        out.backward(inputs.dy)
        states = list(state) if isinstance(state, tuple) else [state]  # (h, c) or h
        tensors = [out, *states, *(leaf.grad for leaf in inputs.leaves.values()),
                   *(p.grad for p in layer.parameters())]
        results.append([t.detach().clone() for t in tensors])
        layer.zero_grad(set_to_none=True)
    _sync(device)
    identical = all(torch.equal(a, b) for run in results[1:] for a, b in zip(results[0], run))
    return {"cell": cell, "provider": provider, "shape": name, "dtype": str(dtype).removeprefix("torch."),
            "repeats": repeats, "bit_identical": identical,
            "barrier_timeouts": lstm_persistent.barrier_timeouts - timeouts_before}


def stage_race(parts: Path, device, smoke: bool) -> None:
    cases = [(SMOKE_SHAPES[0], torch.float32, cell) for cell in CELL_PRECISIONS] if smoke else \
        [(GPU_SHAPES[0], torch.float32, "lstm"), (GPU_SHAPES[1], torch.bfloat16, "lstm"),
         (GPU_SHAPES[0], torch.float32, "gru")]
    for shape, dtype, cell in cases:
        if status("triton-persistent", device, dtype).available:
            _append(parts, "race", race_check("triton-persistent", shape, dtype, device, 2 if smoke else 5, cell))


# --------------------------------------------------------------------------------------- layers


@lru_cache(maxsize=4)
def _expected_output(T: int, B: int, I: int, H: int, cell: str) -> torch.Tensor:
    weights = reference_weights(I, H, cell=cell)
    ref = build_layer("nn", {k: v.double() for k, v in weights.items()}, "cpu", torch.float64, cell)
    inputs = make_inputs(T, B, I, H, "cpu", torch.float64, cell=cell)
    with torch.no_grad():
        return ref(inputs.x, inputs.hx)[0]


def accuracy(layer, shape, dtype: torch.dtype, device, cell: str = "lstm") -> float:
    """Forward output of ``layer`` vs torch.nn's ``cell`` in float64 on the CPU (relative error)."""
    name, T, B, I, H = shape
    inputs = make_inputs(T, B, I, H, device, dtype, cell=cell)
    with torch.no_grad():
        got, _ = layer(inputs.x, inputs.hx)
    return rel_err(got, _expected_output(T, B, I, H, cell))


def time_ms(run, device) -> float:
    """Median milliseconds: triton.testing.do_bench on CUDA; one timed call elsewhere."""
    run()  # compile and warm up outside the clock
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(run, warmup=10, rep=50, return_mode="median"))
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def stage_layers(parts: Path, device, smoke: bool) -> None:
    for cell, precisions in CELL_PRECISIONS.items():
        for shape in SMOKE_SHAPES if smoke else GPU_SHAPES:
            name, T, B, I, H = shape
            for precision, dtype, provider, st in _runnable("layers", f"{cell} {name}", precisions,
                                                            LAYER_PROVIDERS, status, device):
                layer = build_layer(provider, reference_weights(I, H, cell=cell), device, dtype, cell)
                err = accuracy(layer, shape, dtype, device, cell)
                inputs = make_inputs(T, B, I, H, device, dtype, seed=1, cell=cell)
                for mode in ("forward", "forward_backward"):
                    ms = time_ms(operation(mode, layer, inputs, device), device)
                    _append(parts, "layers", {
                        "cell": cell, "shape": name, "T": T, "B": B, "I": I, "H": H, "precision": precision,
                        "mode": mode, "provider": provider, "fusion": fusion_ran(provider, cell, B, H, dtype, device),
                        "ms": ms, "us_per_step": ms * 1e3 / T, "rel_err": err, **_precision_fields(precision, st),
                        "triton_dot_precision": triton_dot_precision(dtype)})


# --------------------------------------------------------------------------------------- varlen


def stage_varlen(parts: Path, device, smoke: bool) -> None:
    """The variable-length target case: forward+backward first (the target), then forward."""
    from bench.varlen import (
        build_varlen_layer,
        check_varlen,
        length_config,
        make_varlen_inputs,
        varlen_operation,
        varlen_status,
    )

    T, B, I, H = VARLEN_SMOKE if smoke else VARLEN_GPU
    for precision, dtype, provider, st in _runnable("varlen", "", VARLEN_PRECISIONS, VARLEN_STAGE_PROVIDERS,
                                                    varlen_status, device):
        layer = build_varlen_layer(provider, reference_weights(I, H), device, dtype)
        errors = check_varlen(provider, layer, "forward_backward", T, B, I, H, device, dtype, 0)
        inputs = make_varlen_inputs(T, B, I, H, device, dtype, seed=1)
        for mode in ("forward_backward", "forward"):
            ms = time_ms(varlen_operation(mode, provider, layer, inputs, device), device)
            _append(parts, "varlen", {
                "T": T, "B": B, "I": I, "H": H, **length_config(inputs, T), "precision": precision, "mode": mode,
                "provider": provider, "ms": ms, "ms_per_sequence": ms / B, "rel_err": max(errors.values()),
                "worst": max(errors, key=errors.get), **_precision_fields(precision, st)})


# ------------------------------------------------------------------------------------------ e2e


def stage_e2e(parts: Path, device, smoke: bool) -> None:
    from lstm_triton.charlm.train import TrainConfig, Trainer

    sizes = SMOKE_E2E_SIZES if smoke else {}
    for label, impl, fusion, epochs in SMOKE_E2E if smoke else GPU_E2E:
        trainer = Trainer(TrainConfig(impl=impl, fusion=fusion, epochs=epochs, seed=0, **sizes), device)
        metrics = trainer.fit()
        _append(parts, "e2e", {
            "implementation": label, "impl": impl, "fusion": fusion, "epochs": epochs,
            "tokens_per_sec_median": float(metrics["tokens_per_sec"].median()),
            "train_perplexity": float(metrics["train_perplexity"].iloc[-1]),
            "val_perplexity": float(metrics["val_perplexity"].iloc[-1]),
            "train_perplexity_per_epoch": [float(p) for p in metrics["train_perplexity"]],
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "interpreted": impl == "triton" and device.type != "cuda"})


# ----------------------------------------------------------------------------------------- peers

PEER_CELL_PRECISIONS = {"lstm": ("fp32-tf32", "bf16"), "gru": ("fp32-tf32", "bf16"), "rnn": ("fp32-tf32", "bf16")}
# --smoke (make test's budget): the LSTM in fp32 only; its rows join groups the layers stage opened, so
# the per-step table still ends with the GRU's
SMOKE_PEER_CELLS, SMOKE_PEER_PRECISIONS = ("lstm",), ("fp32-tf32",)


def stage_peers(parts: Path, device, smoke: bool) -> None:
    """The peers beside the layers' rows (same shapes, precisions, record format). --smoke: the
    compiled loop under aot_eager (no code generation: seconds on a CPU) and the other peers'
    reasons; on a GPU inductor, TorchRL and FlashRNN as installed."""
    from bench.peers import PEERS, compiled, peer_module
    from bench.providers import backend_ran

    for cell, precisions in PEER_CELL_PRECISIONS.items():
        if smoke and cell not in SMOKE_PEER_CELLS:
            continue
        for shape in SMOKE_SHAPES if smoke else GPU_SHAPES:
            name, T, B, I, H = shape
            peer_status = lambda p, d, dt, cell=cell, T=T: status(p, d, dt, cell, T)
            precisions = SMOKE_PEER_PRECISIONS if smoke else precisions
            for precision, dtype, provider, st in _runnable("peers", f"{cell} {name}", precisions, PEERS,
                                                            peer_status, device):
                if smoke and provider != "compiled":
                    continue
                weights = reference_weights(I, H, cell=cell)
                inputs = make_inputs(T, B, I, H, device, dtype, seed=1, cell=cell)
                start = time.perf_counter()
                if smoke and provider == "compiled":
                    layer = compiled.build(weights, device, dtype, cell, compile_backend="aot_eager")
                else:
                    layer = peer_module(provider).build(weights, device, dtype, cell)
                operation("forward_backward", layer, inputs, device)()
                _sync(device)
                first_call_s = time.perf_counter() - start
                err = accuracy(layer, shape, dtype, device, cell)
                backend = "aot_eager" if smoke and provider == "compiled" else backend_ran(provider, cell, device)
                for mode in ("forward", "forward_backward"):
                    ms = time_ms(operation(mode, layer, inputs, device), device)
                    _append(parts, "peers", {
                        "cell": cell, "shape": name, "T": T, "B": B, "I": I, "H": H, "precision": precision,
                        "mode": mode, "provider": provider, "fusion": None, "backend": backend,
                        "first_call_s": first_call_s, "ms": ms, "us_per_step": ms * 1e3 / T, "rel_err": err,
                        **_precision_fields(precision, st)})


STAGES = {"race": stage_race, "layers": stage_layers, "varlen": stage_varlen, "e2e": stage_e2e,
          "peers": stage_peers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=tuple(STAGES))
    parser.add_argument("--parts", required=True, help="folder for the stage's JSON-lines records")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, interpreter)")
    args = parser.parse_args(argv)
    parts = Path(args.parts)
    parts.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    STAGES[args.stage](parts, device, args.smoke)
    _sync(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
