"""The kernels compile for AMD Instinct GPUs through Triton's ROCm backend, ahead of time, on the CPU
(its compiler and linker ship in the triton wheel): the builds the d2l and large launches pick on
gfx942 (MI300X) and gfx950 (MI355X) — no scratch (spilled registers), LDS within the target's
limit, MFMA instructions in every dot, persistent grids resident — and a deliberately oversized
build is flagged as spilling.

One subprocess (TRITON_INTERPRET unset: interpreted kernels cannot be compiled) compiles them all
in one pool, the negative control included. ``LSTM_TRITON_AOT`` widens the set as for NVIDIA
(tests/test_aot_compile.py); make test compiles the rated builds. Main Triton leg only: the
oldest-Triton leg runs a fixed file list (Makefile's KERNEL_TESTS).
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

ARCHES = ("gfx942", "gfx950")
AOT = os.environ.get("LSTM_TRITON_AOT", "")
SCOPE = AOT or "rated"
LDS_LIMIT = {"gfx90a": 64 * 1024, "gfx942": 64 * 1024, "gfx950": 160 * 1024}

# The negative control: the persistent bf16 forward launch at B=16, H=1024 on gfx942, recorded as
# the launcher makes it (8 waves, one reduction chunk each), compiled for one wave holding the whole
# W slice: 128 KB, 512 VGPRs of each lane before anything else — it must spill to scratch.
DRIVER = """if True:
    import json, os, sys
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import asdict
    import torch
    from lstm_triton.kernels.cell_math import LSTM
    from lstm_triton.layers import kernel_report as kr

    plans = [b for arch in sys.argv[2:] for b in kr.planned_builds(arch, sys.argv[1])]
    (fn, args, kwargs), = kr.capture_launches("persistent", "forward", LSTM, 16, 1024, 1, torch.bfloat16, "gfx942")
    oversized = kr._build_from_launch("persistent", fn, args, kwargs, "gfx942", torch.bfloat16, [16, 1024, 1])
    oversized.constexprs.update(SPLIT=1)
    oversized.num_warps, oversized.level, oversized.max_programs = 1, "oversized", 64
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        builds = list(pool.map(kr._compile_one, plans + [oversized]))
    print(json.dumps([asdict(b) for b in builds]))
"""


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, SCOPE, *ARCHES], capture_output=True, text=True, env=env,
                          timeout=None if AOT == "all" else 1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.DataFrame(json.loads(proc.stdout.splitlines()[-1]))


@pytest.fixture
def builds(compiled):
    return compiled[compiled["level"] != "oversized"]


def test_every_build_compiles_without_scratch_and_within_the_lds(builds):
    table = builds[["arch", "kernel", "level", "dtype", "constexprs", "num_warps", "vgprs", "agprs", "scratch_bytes",
                    "shared_bytes", "mma_instructions"]].to_string(index=False)
    print(table)  # shown with -s / -rA
    assert set(builds["arch"]) == set(ARCHES)
    assert (builds["vgprs"] > 0).all() and (builds["agprs"] >= 0).all()
    spilled = builds[builds["spills"] | (builds["scratch_bytes"] > 0) | (builds["vgpr_spills"] > 0)]
    assert spilled.empty, "scratch (spilled registers):\n" + spilled.to_string()
    over = builds[builds["shared_bytes"] > builds["arch"].map(LDS_LIMIT)]
    assert over.empty and builds["shared_fits"].all(), "LDS over the workgroup limit:\n" + over.to_string()


def test_the_d2l_and_large_launches_are_all_there(builds):
    """Forward and backward of the step and persistent levels at each shape, on each target, in
    the precision MIOpen's nn.LSTM computes (IEEE fp32; bf16 'ieee' as the ROCm backend's default)."""
    for arch in ARCHES:
        rated = builds[(builds["arch"] == arch) & (builds["d2l_shape"] | builds["large_shape"])]
        assert len(rated) == 8 and set(rated["level"]) == {"step", "persistent"}, rated.to_string()
        assert rated["d2l_shape"].sum() == 4 and rated["large_shape"].sum() == 4
        assert (rated["useful_mac_fraction"] > 0.999).all()
    if SCOPE == "rated":  # (wider scopes add gfx942's xf32 variants: nn.LSTM with MIOpen off)
        assert (builds["constexprs"].map(lambda c: c["PRECISION"]) == "ieee").all()


def test_persistent_grids_are_resident_with_one_stage(builds):
    """The barrier needs every program resident: the largest grid each build is launched with fits
    the target's CUs (one workgroup each, its LDS and registers within a CU), and no stage
    prefetches across the barrier; the launch asks for a cooperative grid (the ROCm backend has it)."""
    from lstm_triton.kernels.launch_config import HIP_COOPERATIVE_LAUNCH

    persistent = builds[builds["level"] == "persistent"]
    assert len(persistent) >= 4 * len(ARCHES)
    assert persistent["resident"].all() and persistent["grid_fits_sms"].all(), persistent.to_string()
    assert (persistent["max_programs"] > 0).all() and (persistent["num_stages"] == 1).all()
    assert persistent["options"].map(lambda o: o.get("launch_cooperative_grid", False) == HIP_COOPERATIVE_LAUNCH).all()
    assert persistent["pointer_range"].map(lambda p: "w_ptr" in p).all()  # HIP launches: buffer loads


def test_every_dot_runs_on_mfma_and_the_warps_split_the_reduction(builds):
    """Every step and persistent build has v_mfma instructions (fp32 too: the matrix cores take
    IEEE fp32). Persistent: each wave computes 1/SPLIT of its tile's MFMAs — 16×16 outputs, k steps
    of 4 in fp32 (8 in gfx942's xf32), of 16 in bf16/fp16 on gfx942, 32 on gfx950 (its wider bf16
    MFMA) — per gate."""
    from lstm_triton.kernels.cell_math import GATES

    gemm = builds[builds["level"] != "cell"]
    assert (gemm["mma_instructions"] > 0).all(), gemm[gemm["mma_instructions"] <= 0].to_string()
    persistent = builds[builds["level"] == "persistent"]
    for _, row in persistent.iterrows():
        c = row["constexprs"]
        if row["dtype"] == "fp32":  # IEEE: v_mfma_f32_16x16x4_f32; gfx942's xf32: …_16x16x8_xf32
            k_step = 8 if c["PRECISION"] == "tf32" else 4
        else:
            k_step = 32 if row["arch"] == "gfx950" else 16
        tile = (c["BLOCK_B"] // 16) * (c["BLOCK_H"] // 16) * GATES[c.get("CELL", 0)] * (c["BLOCK_K"] + c["BLOCK_K2"])
        assert row["mma_instructions"] == tile // k_step // c["SPLIT"], row.to_dict()


def test_an_oversized_build_is_flagged(compiled):
    """The negative control of the scratch check: one wave holding a whole 128 KB W slice spills
    (scratch bytes and VGPR spills in its metadata), and the report says so."""
    oversized = compiled[compiled["level"] == "oversized"].iloc[0]
    assert oversized["spills"] and oversized["scratch_bytes"] > 0 and oversized["vgpr_spills"] > 0, oversized.to_dict()


def test_lds_over_the_limit_and_registers_over_a_cu_are_not_resident():
    """The negative controls of the LDS and residency checks, on what the compiler reports:
    128 KB of LDS on gfx942 (64 KB) does not fit; neither do 8 waves of 300 registers (2 a SIMD,
    512 registers a lane); the same build within both is resident."""
    from types import SimpleNamespace

    from lstm_triton.kernels.targets import get_target
    from lstm_triton.layers.kernel_report import KernelBuild, _read_amdgcn

    def read(lds, vgprs):
        asm = f"  - .agpr_count: 0\n    .private_segment_fixed_size: 0\n    .sgpr_spill_count: 0\n" \
              f"    .vgpr_count: {vgprs}\n    .vgpr_spill_count: 0\n    v_mfma_f32_16x16x4_f32 a[0:3], v1, v2, a[0:3]\n"
        build = KernelBuild("persistent_forward_kernel", "persistent", "fp32", {}, 8, "gfx942", max_programs=16)
        return _read_amdgcn(build, SimpleNamespace(asm={"amdgcn": asm}, metadata=SimpleNamespace(shared=lds)),
                            get_target("gfx942"))

    fits = read(32768, 120)
    assert fits.shared_fits and fits.resident and not fits.spills and fits.mma_instructions == 1
    too_much_lds = read(131072, 120)
    assert not too_much_lds.shared_fits and not too_much_lds.resident
    assert not read(32768, 300).resident


def test_amdgcn_metadata_and_mfma_are_read_from_the_assembly():
    from lstm_triton.layers.kernel_report import amdgcn_facts

    asm = """
    v_mfma_f32_16x16x4_f32 a[0:3], v1, v2, a[0:3]
    v_mfma_f32_16x16x16_bf16 v[4:7], v[8:9], v[10:11], v[4:7]
    v_fma_f32 v3, v4, v5, v3
    ; v_mfma in a comment
amdhsa.kernels:
  - .agpr_count:     4
    .group_segment_fixed_size: 0
    .private_segment_fixed_size: 24
    .sgpr_count:     61
    .sgpr_spill_count: 0
    .vgpr_count:     106
    .vgpr_spill_count: 3
"""
    assert amdgcn_facts(asm) == {"vgprs": 106, "agprs": 4, "scratch_bytes": 24, "vgpr_spills": 3, "sgpr_spills": 0,
                                 "mfma": 2}
    with pytest.raises(ValueError, match="vgpr_count"):
        amdgcn_facts("v_mfma_f32_16x16x4_f32 a[0:3], v1, v2, a[0:3]")


@pytest.mark.parametrize("arch", ["gfx90a", "gfx942", "gfx950"])
def test_sass_on_an_amd_target_is_a_usage_error(arch, capsys):
    """--sass disassembles NVIDIA cubins; on an AMD target it would leave a column of -1 silently."""
    from lstm_triton.layers.kernel_report import main

    with pytest.raises(SystemExit) as exit_:
        main(["--arch", arch, "--scope", "rated", "--sass"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"--sass disassembles NVIDIA builds; {arch}'s rows" in err
