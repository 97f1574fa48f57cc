"""Variable-length batches (lengths uniform in [T/4, T], seeded), provider × mode × T × dtype:
latency (pytest-benchmark), real-token throughput, kernel latency (do_bench median, CUDA), peak
memory (CUDA), and a float64 check against nn.LSTM on the PackedSequence in the same run.
bench/varlen.py defines the providers and what each is compared on."""

import pytest
import torch

from bench.cases import DTYPES
from bench.measure import kernel_latency_ms, peak_memory_mb, tolerance
from bench.providers import reference_weights
from bench.varlen import (
    FUSION_OF,
    build_varlen_layer,
    check_varlen,
    length_config,
    make_varlen_inputs,
    varlen_operation,
    varlen_status,
)
from lstm_triton.layers.backend import choose_fusion

WEIGHTS_SEED = 0


def test_varlen(benchmark, varlen_case, profile, device, machine):
    case, cfg = varlen_case, profile.varlen
    dtype = DTYPES[case.dtype]
    st = varlen_status(case.provider, device, dtype)
    if not st.available:
        pytest.skip(f"{case.provider}: {st.reason}")
    if device.type == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bf16 is benchmarked on CUDA only")
    if st.interpreted and ((case.provider, case.mode) not in cfg.interpreted or case.T != cfg.interpreted_T):
        pytest.skip(f"{case.provider} runs under the Triton interpreter here: correctness only, at the "
                    f"{profile.name} profile's listed cases (interpreter timings are not performance figures)")
    if not st.interpreted and case.provider not in cfg.timed:
        pytest.skip(f"{case.provider} is not timed in the {profile.name} profile")

    layer = build_varlen_layer(case.provider, reference_weights(case.I, case.H, WEIGHTS_SEED), device, dtype)
    errors = check_varlen(case.provider, layer, case.mode, case.T, case.B, case.I, case.H, device, dtype,
                          WEIGHTS_SEED)
    tol = tolerance(dtype, device)

    inputs = make_varlen_inputs(case.T, case.B, case.I, case.H, device, dtype, seed=1)
    run = varlen_operation(case.mode, case.provider, layer, inputs, device)
    run()  # warm-up outside the clock: compilation, allocator, cuDNN plans
    benchmark.extra_info.update({
        "benchmark": "varlen", "cell": "lstm", "provider": case.provider, "mode": case.mode, "shape": "varlen",
        "fusion": choose_fusion(FUSION_OF[case.provider], case.B, case.H, dtype, device)
        if case.provider in FUSION_OF else None, "T": case.T,
        "B": case.B, "I": case.I, "H": case.H, "dtype": case.dtype, "interpreted": st.interpreted,
        "tokens": inputs.real_tokens, **length_config(inputs, case.T), "rel_err": errors,
        "max_rel_err": max(errors.values()), "tolerance": tol, "machine": machine,
        "kernel_ms": kernel_latency_ms(run, device), "peak_mem_mb": peak_memory_mb(run, device),
    })
    rounds, warmup_rounds = (1, 0) if st.interpreted else (profile.rounds, profile.warmup_rounds)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{case.provider} disagrees with float64 nn.LSTM on the packed input beyond {tol}: {bad}"
