"""Every kernel configuration the launchers can pick compiles ahead of time for sm_80 and sm_90
(``LSTM_TRITON_AOT=all``; by default a smaller set, see ``SCOPE`` below).

Compiling needs real (not interpreted) @triton.jit functions, so the report runs in a
subprocess with TRITON_INTERPRET unset. ptxas ships inside the triton wheel: no GPU needed.
"""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # max shared memory per block


# LSTM_TRITON_AOT selects the set (kernel_report.planned_builds' scope) per architecture:
#   unset            make test's: the ci scope for sm_90 (where registers and shared memory run out
#                    first: the LSTM's and GRU's widest tiles, most-aligned, ~3 CPU-minutes cold) and
#                    the rated builds for sm_80;
#   "rated"          only the d2l and large launches' builds (8 per architecture; the Triton 3.6 leg);
#   "representative" every configuration class in its most-aligned runtime specialisation (the
#                    persistent ones also in their least-aligned one) and the rated builds (~230 per
#                    architecture: ~8 min cold on 2 cores for each);
#   "all"            every build the launchers can compile, in every runtime specialisation of B, H
#                    and the pointers (~5,500 per architecture: hours cold).
AOT = os.environ.get("LSTM_TRITON_AOT", "")
if AOT not in ("", "rated", "representative", "all"):
    raise ValueError(f"LSTM_TRITON_AOT must be unset or one of rated, representative, all, got {AOT!r}")
SCOPE = {"sm_80": AOT or "rated", "sm_90": AOT or "ci"}
ALL = AOT == "all"


def scope(builds) -> str:
    return SCOPE[builds.attrs["arch"]]


def needs(builds, *scopes: str) -> None:
    """Skip a test whose claim is about a wider set than the one compiled for this architecture."""
    if scope(builds) not in scopes:
        pytest.skip(f"{builds.attrs['arch']} compiled the {scope(builds)} set (LSTM_TRITON_AOT selects it)")


@pytest.fixture(scope="module", params=["sm_80", "sm_90"])
def builds(request):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "lstm_triton.layers.kernel_report", "--arch", request.param, "--json",
           "--scope", SCOPE[request.param]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=None if ALL else 1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.DataFrame(json.loads(proc.stdout.splitlines()[-1]))
    df.attrs["arch"] = request.param
    return df


def test_every_launcher_configuration_compiles(builds, record_property):
    table = builds[["kernel", "level", "dtype", "constexprs", "num_warps", "divisible", "registers", "stack_bytes",
                    "spill_bytes", "shared_bytes"]].to_string(index=False)
    print(table)  # shown with -s / -rA: registers, spills and shared memory per configuration
    record_property("kernel_builds", table)
    assert (builds["registers"] > 0).all() and (builds["registers"] <= 255).all()
    over = builds[builds["shared_bytes"] > SHARED_LIMIT[builds.attrs["arch"]]]
    assert over.empty, "shared memory over the per-block limit (launch would fail):\n" + over.to_string()
    if scope(builds) == "rated":
        return
    # "rescue": the kernels that repair a persistent call whose grid barrier timed out (lstm_step.py)
    ci = scope(builds) == "ci"
    levels = {"step", "persistent", "rescue"} | (set() if ci else {"cell"})
    assert set(builds["level"]) == levels
    rescue = builds[builds["level"] == "rescue"]
    assert {c.get("CELL", 0) for c in rescue["constexprs"]} >= {0} and set(rescue["dtype"]) >= {"fp32", "bf16"}
    # every level's kernels for every cell type (CELL unset: the LSTM; 1 GRU, 2 RNN_TANH, 3 RNN_RELU),
    # or in the ci set the LSTM's and GRU's persistent kernels and the LSTM's step kernels (_ci_configs)
    assert set(builds["dtype"]) == ({"fp32", "bf16"} if ci else {"fp32", "bf16", "fp16"})
    every = {0, 1, 2, 3}
    expected = {"step": {0}, "persistent": {0, 1}} if ci else {"cell": every, "step": every, "persistent": every}
    for level, cells in expected.items():
        assert {c.get("CELL", 0) for c in builds.loc[builds["level"] == level, "constexprs"]} == cells


def test_persistent_grids_fit_the_sms_and_nothing_is_prefetched_across_the_barrier(builds):
    persistent = builds[builds["level"] == "persistent"]
    assert len(persistent) >= (4 if scope(builds) == "rated" else 8) and persistent["grid_fits_sms"].all()
    assert (persistent["max_programs"] > 0).all()
    assert (persistent["num_stages"] == 1).all() and (persistent["cp_async"] == 0).all()


def test_every_cell_type_has_its_reachable_persistent_set(builds):
    """The report builds, per cell type, exactly the persistent configurations the launcher can
    pick for it (its W slice: 4, 3 or 1 gate blocks), forward and backward, each precision, each
    in one or more runtime specialisations."""
    needs(builds, "representative", "all")
    import torch

    from lstm_triton.kernels.cell_math import GATES
    from lstm_triton.kernels.launch_config import persistent_choices, persistent_precisions
    from lstm_triton.layers.kernel_report import _shape_picks, representative_persistent

    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    persistent = builds[builds["level"] == "persistent"]
    cells = persistent["constexprs"].map(lambda c: c.get("CELL", 0))
    arch = int(builds.attrs["arch"].removeprefix("sm_")) // 10
    for cell, gates in GATES.items():
        rows = persistent[cells == cell]
        choices = persistent_choices(arch, gates)
        if not ALL:  # the representative set: what the d2l and large shapes pick, and the extremes
            picks = _shape_picks(arch, gates)
            wanted = representative_persistent(arch, gates)
            choices = {k: v for k, v in choices.items() if k in wanted}
            assert picks <= set(choices) and len(choices) >= len(picks) + 3, cell
            widest = max(c.block_k + c.block_k2 for c, _ in persistent_choices(arch, gates))
            assert widest in {c.block_k + c.block_k2 for c, _ in choices}, cell
        built = {(c["BLOCK_B"], c["BLOCK_K"], c["BLOCK_K2"], c["SPLIT"], w, dt)
                 for c, w, dt in zip(rows["constexprs"], rows["num_warps"], rows["dtype"])}
        assert built == {(c.block_b, c.block_k, c.block_k2, c.split_k, c.num_warps, names[dt]) for c, dt in choices}
        # forward and backward of each, in each precision it runs with (fp32: TF32, and IEEE up to K = 256)
        precisions = persistent_precisions(arch, gates)
        kinds = {(k, d, json.dumps(c, sort_keys=True))
                 for k, d, c in zip(rows["kernel"], rows["dtype"], rows["constexprs"])}
        assert len(kinds) == 2 * sum(len(precisions[key]) for key in choices), cell
        assert len(rows) >= len(kinds)


def test_auto_picks_a_compiled_persistent_config_for_the_d2l_and_large_shapes(builds):
    """Both shapes run persistent on both architectures (the large one since H=768 is reduced
    as 512 + 256: its bf16 slice fits an A100 block too)."""
    persistent = builds[builds["level"] == "persistent"]
    assert persistent["d2l_shape"].sum() == 2  # forward + backward kernels
    assert persistent["large_shape"].sum() == 2


def test_tiles_compute_no_padding_at_the_d2l_and_large_shapes(builds):
    """useful_mac_fraction: real B·4H·H multiply-adds over what the tiles compute; NaN on rows
    that are not a shape's pick (and on the cell level, whose GEMM is torch's)."""
    rated = builds[builds["d2l_shape"] | builds["large_shape"]]
    assert set(rated["level"]) == {"step", "persistent"} and len(rated) == 8
    assert (rated["useful_mac_fraction"] > 0.999).all(), rated.to_string()
    assert builds.loc[~(builds["d2l_shape"] | builds["large_shape"]), "useful_mac_fraction"].isna().all()


def test_tensor_cores_run_the_dots(builds):
    """mma_instructions counts mma.sync/wgmma in the PTX: the default (TF32) fp32 configuration at
    the d2l shape and every bf16/fp16 dot use tensor cores; IEEE fp32 dots cannot (0 MMAs), which
    shows the count tells the two apart. At the d2l and large shapes the SASS is disassembled too,
    and ptxas kept every one (HMMA/HGMMA…); the other rows are not disassembled (-1)."""
    d2l = builds[builds["d2l_shape"]]
    assert len(d2l) == 4 and (d2l["mma_instructions"] > 0).all(), d2l.to_string()
    rated = builds["d2l_shape"] | builds["large_shape"]
    assert (builds.loc[rated, "sass_mma_instructions"] == builds.loc[rated, "mma_instructions"]).all()
    assert (builds.loc[~rated, "sass_mma_instructions"] == -1).all()
    if scope(builds) == "rated":
        return
    gemm = builds[builds["level"] != "cell"]
    half = gemm[gemm["dtype"] != "fp32"]
    ieee = gemm[gemm["constexprs"].map(lambda c: c["PRECISION"] == "ieee")]
    assert (half["mma_instructions"] > 0).all() and len(ieee) > 0 and (ieee["mma_instructions"] == 0).all()
    assert (builds.loc[builds["level"] == "cell", "mma_instructions"] == 0).all()


def test_persistent_warps_split_the_reduction_instead_of_repeating_it(builds):
    """Each warp of a persistent program computes 1/SPLIT of the recurrent GEMM: its MMA count is
    the tile's MMAs (16×8 outputs, k steps of 8 in TF32 / 16 in bf16-fp16, for each of the cell's
    gate blocks) divided by SPLIT."""
    from lstm_triton.kernels.cell_math import GATES

    persistent = builds[(builds["level"] == "persistent") & (builds["mma_instructions"] > 0)]
    for _, row in persistent.iterrows():
        c = row["constexprs"]
        k_step = 8 if row["dtype"] == "fp32" else 16
        gates = GATES[c.get("CELL", 0)]
        tile_mmas = (c["BLOCK_B"] // 16) * (c["BLOCK_H"] // 8) * gates * (c["BLOCK_K"] + c["BLOCK_K2"]) // k_step
        assert row["mma_instructions"] == tile_mmas // c["SPLIT"], row.to_dict()


SPILL_COLUMNS = ["kernel", "dtype", "constexprs", "num_warps", "divisible", "specialised", "example", "registers",
                 "stack_bytes", "spill_bytes", "spill_loads"]


def test_no_spills_at_the_d2l_and_large_shapes(builds):
    rated = builds[builds["d2l_shape"] | builds["large_shape"]]
    assert len(rated) == 8  # forward and backward kernels of the step and persistent levels, each shape
    spilled = rated[rated["spills"]]
    assert spilled.empty, spilled[SPILL_COLUMNS].to_string()


def test_rows_are_the_runtime_launches(builds):
    """Each row is what a launch compiles: at the d2l and large shapes B and H are multiples of 16
    and Triton marks them so (T never: do_not_specialize), and the persistent launches carry their
    options (launch_cooperative_grid where Triton has it)."""
    from lstm_triton.kernels.launch_config import COOPERATIVE_LAUNCH

    rated = builds[builds["d2l_shape"] | builds["large_shape"]]
    for _, row in rated.iterrows():
        assert {"B", "H"} <= set(row["divisible"]) and "T" not in row["divisible"], row.to_dict()
        assert row["example"][:2] in ([32, 256], [16, 768])
    persistent = builds[builds["level"] == "persistent"]
    assert persistent["options"].map(lambda o: o.get("launch_cooperative_grid", False) == COOPERATIVE_LAUNCH).all()
    assert (builds["signature"].map(lambda s: s.get("T", "i32")) == "i32").all()


def test_useful_mac_fraction_counts_padding():
    from lstm_triton.layers.kernel_report import useful_mac_fraction

    # the tiles these shapes ran before: a 64-row batch tile at d2l, K padded to 1024 at H=768
    old_d2l = {"BLOCK_B": 64, "BLOCK_H": 16, "BLOCK_K": 256}
    old_large = {"BLOCK_B": 16, "BLOCK_H": 16, "BLOCK_K": 1024}
    assert useful_mac_fraction("persistent_forward_kernel", old_d2l, 32, 256) == 0.5
    assert useful_mac_fraction("persistent_backward_kernel", old_large, 16, 768) == 0.75
    assert useful_mac_fraction("step_backward_kernel", {"BLOCK_B": 16, "BLOCK_H": 16, "BLOCK_K": 64}, 3, 20) == (
        3 * 20 * 20 / (16 * 32 * 128 / 4))
    assert math.isclose(useful_mac_fraction("persistent_forward_kernel", {**old_large, "BLOCK_K": 512,
                                                                          "BLOCK_K2": 256}, 16, 768), 1.0)


def test_mma_count_reads_sass_opcodes():
    from lstm_triton.layers.kernel_report import count_mma_instructions

    sass = """
        /*0a70*/                   HMMA.1684.F32.TF32 R20, R4, R16, R20 ;
        /*0a80*/                   HGMMA.64x16x8.F32.TF32 R24, gdesc[UR4], R24 ;
        /*0a90*/               @P0 HMMA.16816.F32.BF16 R8, R12, R2, R8 ;
        /*0aa0*/                   FFMA R3, R4, R5, R3 ;
        /*0ab0*/                   LDSM.16.M88.4 R4, [R2] ;
    """
    assert count_mma_instructions(sass) == 3


def test_no_spills_anywhere(builds):
    """A build spills when ptxas gives it a stack frame or spill stores (spilled registers live in
    the stack frame; cuobjdump's LOCAL stays 0). test_report_flags_a_spilling_build shows the
    report catches one."""
    spilled = builds[builds["spills"] | (builds["stack_bytes"] > 0) | (builds["spill_bytes"] > 0)]
    assert spilled.empty, spilled[SPILL_COLUMNS].to_string()


def test_report_flags_a_spilling_build():
    """The negative control of test_no_spills_anywhere: the d2l-free persistent bf16 launch at
    H=1024, B=32 (sm_90), recorded as the launcher makes it, but with a 64-row batch tile and 4
    warps (one reduction chunk each) — far more than 255 registers hold — compiled by the same
    report code, must come out spilling."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = """if True:
        import torch
        from lstm_triton.layers import kernel_report as kr
        from lstm_triton.kernels.cell_math import LSTM
        (fn, args, kwargs), = kr.capture_launches("persistent", "forward", LSTM, 32, 1024, 1, torch.bfloat16, 9)
        build = kr._build_from_launch("persistent", fn, args, kwargs, "sm_90", torch.bfloat16, [32, 1024, 1])
        build.constexprs.update(BLOCK_B=64, SPLIT=4)
        build.num_warps = 4
        kr._compile_one(build)
        print(build.registers, build.stack_bytes, build.spill_bytes, build.spill_loads, build.spills)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    registers, stack, stores, loads, spills = proc.stdout.split()[-5:]
    assert spills == "True" and int(stack) > 0 and int(stores) > 0 and int(loads) > 0, proc.stdout


def test_ptxas_log_is_read_for_stack_frame_and_spills():
    from lstm_triton.layers.kernel_report import parse_ptxas_log

    log = """ptxas info    : Compiling entry function 'persistent_forward_kernel' for 'sm_90a'
ptxas info    : Function properties for persistent_forward_kernel
    392 bytes stack frame, 396 bytes spill stores, 396 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 392 bytes cumulative stack size
"""
    assert parse_ptxas_log(log) == {"stack": 392, "spill_stores": 396, "spill_loads": 396}
    assert parse_ptxas_log("ptxas info    : Used 40 registers") is None


def test_persistent_kernels_compile_once_for_every_sequence_length():
    """T is a runtime argument Triton must not specialise on (T == 1, T % 16 == 0 variants)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from lstm_triton.kernels import lstm_persistent as P\n"
            "for f in (P.persistent_forward_kernel, P.persistent_backward_kernel):\n"
            "    print(f.__name__, [p.name for p in f.params if p.do_not_specialize])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["persistent_forward_kernel ['T']", "persistent_backward_kernel ['T']"]


def test_mma_count_reads_ptx_instructions():
    from lstm_triton.layers.kernel_report import count_ptx_mma

    ptx = """
\tmma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 { %r1, %r2, %r3, %r4 }, { %r5 }, { %r6 }, { %r7 };
\t@%p3 mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 { %r1 }, { %r5 }, { %r6 }, { %r7 };
\twgmma.mma_async.sync.aligned.m64n16k8.f32.tf32.tf32 { %r1 }, %rd1, %rd2, 1, 1, 1;
\twgmma.fence.sync.aligned;
\tfma.rn.f32 %r8, %r9, %r10, %r8;
\t// mma.sync in a comment
"""
    assert count_ptx_mma(ptx) == 3


def test_cubin_facts_disassemble_only_when_asked(monkeypatch):
    """The resource usage is read for every build; the SASS (a third of a cold compile) only
    for the rows that ask for it."""
    from lstm_triton.layers import kernel_report as kr

    calls = []

    def cuobjdump(cubin, *flags):
        calls.append(flags)
        sass = "        /*0a70*/                   HMMA.1684.F32.TF32 R20, R4, R16, R20 ;\n"
        return "Function k:\n  REG:40 STACK:0 SHARED:1024 LOCAL:8 CONSTANT[0]:1\n" + (
            sass if "--dump-sass" in flags else "")

    monkeypatch.setattr(kr, "_cuobjdump", cuobjdump)
    assert kr.cubin_facts(b"k") == {"REG": 40, "STACK": 0, "SHARED": 1024, "LOCAL": 8}
    assert kr.cubin_facts(b"k", sass=True) == {"REG": 40, "STACK": 0, "SHARED": 1024, "LOCAL": 8, "SASS_MMA": 1}
    assert calls == [("--dump-resource-usage",), ("--dump-resource-usage", "--dump-sass")]
