"""One recurrent layer, cell × provider × mode × shape × dtype: latency (pytest-benchmark), kernel
latency (do_bench median, CUDA), peak memory (CUDA), and a float64 correctness check against
torch.nn's layer of the same cell in the same run. ``fusion`` in the record is the level that ran."""

import pytest
import torch

from bench.cases import DTYPES, NN_CLASS_NAMES
from bench.measure import (
    check_against_reference,
    kernel_latency_ms,
    make_inputs,
    operation,
    peak_memory_mb,
    tolerance,
)
from bench.providers import IMPL_OF, build_layer, fusion_ran, reference_weights, status

WEIGHTS_SEED = 0


def test_layer(benchmark, layer_case, profile, device, machine):
    case, shape, cell = layer_case, layer_case.shape, layer_case.cell
    dtype = DTYPES[case.dtype]
    st = status(case.provider, device, dtype)
    if not st.available:
        pytest.skip(f"{case.provider}: {st.reason}")
    if st.interpreted and shape.name not in profile.interpreted_shapes:
        pytest.skip(f"{case.provider} runs under the Triton interpreter here: correctness only, at "
                    f"{'/'.join(profile.interpreted_shapes)} (interpreter timings are not performance figures)")
    if device.type == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bf16 is benchmarked on CUDA only")

    weights = reference_weights(shape.I, shape.H, WEIGHTS_SEED, cell)
    layer = build_layer(case.provider, weights, device, dtype, cell)
    errors = check_against_reference(layer, case.mode, shape.T, shape.B, shape.I, shape.H, device, dtype,
                                     WEIGHTS_SEED, cell)
    tol = tolerance(dtype, device)

    inputs = make_inputs(shape.T, shape.B, shape.I, shape.H, device, dtype, seed=1, cell=cell)
    run = operation(case.mode, layer, inputs, device)
    run()  # warm-up outside the clock: compilation, allocator, cuDNN plans
    benchmark.extra_info.update({
        "cell": cell, "provider": case.provider, "mode": case.mode, "shape": shape.name, "T": shape.T,
        "B": shape.B, "I": shape.I, "H": shape.H, "dtype": case.dtype, "sweep_value": shape.sweep_value,
        "fusion_requested": IMPL_OF[case.provider][1] if case.provider.startswith("triton") else None,
        "fusion": fusion_ran(case.provider, cell, shape.B, shape.H, dtype, device),
        "tokens": shape.T * shape.B, "interpreted": st.interpreted, "rel_err": errors,
        "max_rel_err": max(errors.values()), "tolerance": tol, "machine": machine,
        "cell_plan": profile.cell_plan(cell),
        "kernel_ms": kernel_latency_ms(run, device), "peak_mem_mb": peak_memory_mb(run, device),
    })
    rounds, warmup_rounds = profile.rounds_for(shape.name, st.interpreted)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{cell} {case.provider} disagrees with float64 {NN_CLASS_NAMES[cell]} beyond {tol}: {bad}"
