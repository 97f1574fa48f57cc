"""One recurrent layer, cell × provider × mode × shape × dtype: latency (pytest-benchmark), kernel
latency (do_bench median, CUDA), peak memory (CUDA), and a float64 correctness check against
torch.nn's layer of the same cell in the same run. ``fusion`` in the record is the level that ran;
``backend`` what runs under a peer's name (bench/peers/).

Fair by construction: every provider is built from the same PyTorch-layout weights, runs its input
projection inside the timed layer, in the same dtype and the same fp32 precision, set explicitly
around the whole case (:func:`bench.peers.fp32_precision`: IEEE on a CPU — there is no TF32 there —,
TF32 on a GPU, cuDNN's default for nn.LSTM) and recorded as ``precision``; the warm-up per shape
runs outside the clock and every timed round synchronises.

Beside speed, per case: ``rel_err`` (the worst relative error over output, final state and every
gradient against float64 torch.nn), ``first_call_s`` (forward+backward cases: seconds from
constructing the provider to its first forward+backward finished, compilation included), and at
the profile's robustness shapes the same check on inputs x ×100 (``rel_err_x100``: inf when a
provider returns NaN/inf; an exception is recorded as ``robustness_error``).
"""

import time

import pytest
import torch

from bench.cases import DTYPES, NN_CLASS_NAMES
from bench.measure import (
    check_against_reference,
    kernel_latency_ms,
    make_inputs,
    operation,
    peak_memory_mb,
    reference,
    synchronize,
    tolerance,
)
from bench.peers import fp32_precision, precision_label
from bench.providers import IMPL_OF, PEER_PROVIDERS, backend_ran, build_layer, fusion_ran, reference_weights, status

WEIGHTS_SEED = 0
ROBUSTNESS_SCALE = 100.0


def _skip_reason(case, st, profile) -> str | None:
    """Why this case does not run here (None: it runs)."""
    if not st.available:
        return st.reason
    left_out = profile.peer_skip(case.provider, case.cell) if case.provider in PEER_PROVIDERS else None
    if left_out:
        return f"{profile.name} profile: left out ({left_out})"
    if st.interpreted and not profile.runs_interpreted(case.shape.name, case.mode):
        return (f"runs under the Triton interpreter here: correctness only, at "
                f"{'/'.join(profile.interpreted_shapes)} in {'/'.join(profile.interpreted_modes)} "
                f"(interpreter timings are not performance figures)")
    return None


def test_layer(benchmark, layer_case, profile, device, machine, note_peer_skip):
    case, cell = layer_case, layer_case.cell
    dtype = DTYPES[case.dtype]
    if device.type == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bf16 is benchmarked on CUDA only")
    st = status(case.provider, device, dtype, cell, case.shape.T)
    why = _skip_reason(case, st, profile)
    if why:
        if case.provider in PEER_PROVIDERS:
            note_peer_skip(cell, case.provider, why)
        pytest.skip(f"{case.provider}: {why}")
    with fp32_precision("tf32" if device.type == "cuda" else "ieee"):
        _run_case(benchmark, case, st, profile, device, machine, dtype)


def _run_case(benchmark, case, st, profile, device, machine, dtype):
    shape, cell = case.shape, case.cell
    T, B, I, H = shape.T, shape.B, shape.I, shape.H
    weights = reference_weights(I, H, WEIGHTS_SEED, cell)
    reference(T, B, I, H, WEIGHTS_SEED, cell=cell)  # the float64 reference: outside the first-call clock
    inputs = make_inputs(T, B, I, H, device, dtype, seed=1, cell=cell)
    def check():
        layer.zero_grad(set_to_none=True)  # the warm-up's weight gradients would add to the check's
        return check_against_reference(layer, case.mode, T, B, I, H, device, dtype, WEIGHTS_SEED, cell)

    start = time.perf_counter()
    layer = build_layer(case.provider, weights, device, dtype, cell)
    first_call_s = None
    if case.mode != "forward_backward":
        errors = check()  # before train_step's warm-up moves the weights
    run = operation(case.mode, layer, inputs, device)
    run()  # warm-up outside the clock: compilation, allocator, cuDNN plans
    synchronize(device)
    if case.mode == "forward_backward":
        first_call_s = time.perf_counter() - start  # constructed, compiled, one forward+backward finished
        errors = check()
    tol = tolerance(dtype, device)
    benchmark.extra_info.update({
        "cell": cell, "provider": case.provider, "mode": case.mode, "shape": shape.name, "T": T,
        "B": B, "I": I, "H": H, "dtype": case.dtype, "sweep_value": shape.sweep_value,
        "fusion_requested": IMPL_OF[case.provider][1] if case.provider.startswith("triton") else None,
        "fusion": fusion_ran(case.provider, cell, B, H, dtype, device),
        "backend": backend_ran(case.provider, cell, device), "precision": precision_label(dtype, device),
        "tokens": T * B, "interpreted": st.interpreted, "rel_err": errors,
        "max_rel_err": max(errors.values()), "tolerance": tol, "machine": machine,
        "first_call_s": first_call_s, "cell_plan": profile.cell_plan(cell),
        "kernel_ms": kernel_latency_ms(run, device), "peak_mem_mb": peak_memory_mb(run, device),
    })
    if case.mode == "forward_backward" and shape.name in profile.robustness_shapes and (
            profile.robustness_interpreted or not st.interpreted):
        benchmark.extra_info.update(robustness(layer, shape, device, dtype, cell))
    rounds, warmup_rounds = profile.rounds_for(shape.name, st.interpreted)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{cell} {case.provider} disagrees with float64 {NN_CLASS_NAMES[cell]} beyond {tol}: {bad}"


def robustness(layer, shape, device, dtype, cell) -> dict:
    """The float64 check (forward+backward) on inputs x ×100: ``rel_err_x100`` (worst over output,
    final state and every gradient; inf for NaN/inf), its largest part, or the exception raised.
    Recorded, not asserted: saturated gates make even torch.nn's own fp32 error grow, so the report
    compares each provider with torch.nn's figure."""
    try:
        errors = check_against_reference(layer, "forward_backward", shape.T, shape.B, shape.I, shape.H, device,
                                         dtype, WEIGHTS_SEED, cell, scale=ROBUSTNESS_SCALE)
    except Exception as err:  # noqa: BLE001 — a provider that breaks on large inputs is the finding
        return {"rel_err_x100": float("inf"), "robustness_error": f"{type(err).__name__}: {err}"[:200]}
    finally:
        layer.zero_grad(set_to_none=True)
    worst = max(errors, key=errors.get)
    return {"rel_err_x100": errors[worst], "rel_err_x100_worst": worst, "robustness_scale": ROBUSTNESS_SCALE}
