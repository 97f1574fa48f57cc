"""Compile every kernel configuration the launchers can pick, ahead of time, for a GPU target,
and report registers, spills, shared memory and tensor-core (MMA) instructions, plus the useful
fraction of the multiply-adds the tiles compute at the d2l and large shapes (no GPU needed:
ptxas and cuobjdump ship in the triton wheel).

    python -m lstm_triton.layers.kernel_report --arch sm_90 [--json]

Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled); the CLI and the
tests call it in a subprocess for that reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..kernels import lstm_cell, lstm_persistent, lstm_step
from ..kernels.cell_math import GATES, GRU, LSTM, RNN_RELU, RNN_TANH
from ..kernels.launch_config import (
    MAX_SPINS,
    SM_COUNT,
    dot_precision,
    persistent_choices,
    persistent_config,
    reachable_pointwise_configs,
    reachable_step_configs,
    step_config,
)

KERNELS = {fn.__name__: fn for fn in (
    lstm_cell.cell_forward_kernel, lstm_cell.cell_backward_kernel,
    lstm_step.step_forward_kernel, lstm_step.step_backward_kernel,
    lstm_persistent.persistent_forward_kernel, lstm_persistent.persistent_backward_kernel,
)}
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # max shared memory per block

TYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Which pointer arguments carry the input dtype (the rest are fp32 state/activations).
DT_POINTERS = {
    "cell_forward_kernel": {"hw_ptr", "y_ptr"},
    "cell_backward_kernel": {"dh_rec_ptr", "dg_ptr"},
    "step_forward_kernel": {"h_prev_ptr", "w_ptr", "y_ptr"},
    "step_backward_kernel": {"dg_next_ptr", "w_ptr", "dg_ptr"},
    "persistent_forward_kernel": {"w_ptr", "hbuf_ptr"},
    "persistent_backward_kernel": {"w_ptr", "dg_last_ptr"},
}
INT_POINTERS = {"counter_ptr", "flag_ptr"}
# The two shapes the report rates (B, H, dtype): the d2l char LM and the cuDNN comparison point.
D2L = (32, 256, torch.float32)
LARGE = (16, 768, torch.bfloat16)
# SASS opcodes of tensor-core matrix multiplies: HMMA (mma.sync, fp16/bf16/tf32), HGMMA (sm_90
# wgmma), IMMA/IGMMA (integer), DMMA (fp64), QGMMA (fp8).
MMA_OPCODE = re.compile(r"\b(?:HMMA|HGMMA|IMMA|IGMMA|DMMA|QGMMA)\.")
# Their PTX: each mma.sync / wgmma.mma_async instruction becomes one of the above.
PTX_MMA = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:mma\.sync|wgmma\.mma_async)\.", re.MULTILINE)


@dataclass
class KernelBuild:
    kernel: str
    level: str
    dtype: str
    constexprs: dict
    num_warps: int
    arch: str
    num_stages: int = 3  # Triton's default; the persistent launchers pass 1
    registers: int = -1
    cp_async: int = -1  # cp.async instructions in the PTX (prefetches; must be 0 across a grid barrier)
    spill_bytes: int = -1  # local memory per thread (register spills)
    stack_bytes: int = -1
    shared_bytes: int = -1
    mma_instructions: int = -1  # tensor-core MMA instructions in the PTX (0: the dots run on the FMA units)
    # The same count in the SASS ptxas wrote: disassembled for the d2l/large rows only (-1 elsewhere;
    # ``--sass``: every row), where it shows ptxas kept every MMA the PTX asked for.
    sass_mma_instructions: int = -1
    d2l_shape: bool = False  # the config picked for B=32, H=256, fp32 (default precision)
    large_shape: bool = False  # the config picked for B=16, H=768, bf16
    # At the shape this row is picked for (d2l or large): real multiply-adds of the recurrent GEMM
    # (B·4H·H) over those the tiles compute, padding included; NaN for other rows and for the
    # cell level (its GEMM is torch's).
    useful_mac_fraction: float = math.nan
    max_programs: int = 0  # persistent: largest grid the launcher gives this config; 0 = no barrier
    grid_fits_sms: bool = True  # persistent: max_programs ≤ the architecture's SM count
    shared_fits: bool = True  # shared_bytes within what one block may use on this architecture


def _signature(fn, dtype: torch.dtype) -> tuple[dict, dict]:
    sig, attrs = {}, {}
    for idx, (name, param) in enumerate(zip(fn.arg_names, fn.params)):
        if param.is_constexpr:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            kind = "i32" if name in INT_POINTERS else TYPE[dtype] if name in DT_POINTERS[fn.__name__] else "fp32"
            sig[name] = "*" + kind
            attrs[(idx,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        else:
            sig[name] = "i32"
    return sig, attrs


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, *flags, f.name], capture_output=True, text=True, check=True).stdout


def cubin_facts(cubin: bytes, sass: bool = False) -> dict[str, int]:
    """REG, STACK, SHARED and LOCAL of one cubin (cuobjdump's resource usage, ~10 ms), and with
    ``sass`` also SASS_MMA, the tensor-core instructions in its disassembly. Disassembling costs
    ~0.65 s a build (a persistent kernel's SASS is ~1 MB of text), a third of a cold compile, so
    the report does it only where asked (:func:`compile_build`)."""
    text = _cuobjdump(cubin, "--dump-resource-usage", *(["--dump-sass"] if sass else []))
    facts = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}
    if sass:
        facts["SASS_MMA"] = count_mma_instructions(text)
    return facts


def count_mma_instructions(sass: str) -> int:
    """Tensor-core MMA instructions in ``cuobjdump --dump-sass`` output (static count)."""
    return len(MMA_OPCODE.findall(sass))


def count_ptx_mma(ptx: str) -> int:
    """Tensor-core MMA instructions (``mma.sync``, ``wgmma.mma_async``) in PTX (static count)."""
    return len(PTX_MMA.findall(ptx))


def compile_build(build: KernelBuild, fn, sass: bool = False) -> KernelBuild:
    """Compile ``build`` of the @triton.jit ``fn`` for its architecture and fill in what the report
    reads from the PTX and the cubin; the SASS is disassembled for the d2l/large rows, or every row
    with ``sass``."""
    major = int(build.arch.removeprefix("sm_"))
    sig, attrs = _signature(fn, {v: k for k, v in TYPE.items()}[build.dtype])
    # ASTSource does not apply a constexpr's default (a launch does): an unset CELL would compile
    # another branch than the launchers run.
    defaults = {p.name: p.default for p in fn.params if p.is_constexpr and p.has_default}
    consts = {**defaults, **build.constexprs}
    if consts.get("CELL", 0) == 0:  # the LSTM's launches leave GRU/RNN-only pointers (b_ptr) at None
        for idx, p in enumerate(fn.params):
            if p.has_default and p.default is None:
                sig[p.name] = "constexpr"
                consts[p.name] = None
                attrs.pop((idx,), None)
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    options = {"num_warps": build.num_warps, "num_stages": build.num_stages}
    compiled = triton.compile(src, target=GPUTarget("cuda", major, 32), options=options)
    build.cp_async = compiled.asm["ptx"].count("cp.async.")
    build.mma_instructions = count_ptx_mma(compiled.asm["ptx"])
    facts = cubin_facts(compiled.asm["cubin"], sass=sass or build.d2l_shape or build.large_shape)
    build.registers, build.spill_bytes, build.stack_bytes = facts["REG"], facts["LOCAL"], facts["STACK"]
    build.shared_bytes = max(int(compiled.metadata.shared), facts["SHARED"])
    build.shared_fits = build.shared_bytes <= SHARED_LIMIT[build.arch]
    build.sass_mma_instructions = facts.get("SASS_MMA", -1)
    return build


def useful_mac_fraction(kernel: str, consts: dict, batch: int, hidden: int) -> float:
    """Real multiply-adds of the recurrent GEMM (B·4H·H) over those computed by the tiles of a
    step or persistent kernel (padding of B, H and the reduction included)."""
    bb, bh = consts["BLOCK_B"], consts["BLOCK_H"]
    padded_rows = triton.cdiv(batch, bb) * bb
    padded_units = triton.cdiv(hidden, bh) * bh
    if kernel.startswith("persistent"):
        padded_k = consts["BLOCK_K"] + consts.get("BLOCK_K2", 0)  # per gate, forward and backward alike
    elif kernel == "step_forward_kernel":
        padded_k = triton.cdiv(hidden, consts["BLOCK_K"]) * consts["BLOCK_K"]
    else:  # step backward: one reduction over all 4H gate rows, in BLOCK_K chunks
        padded_k = triton.cdiv(4 * hidden, consts["BLOCK_K"]) * consts["BLOCK_K"] / 4
    return batch * hidden * hidden / (padded_rows * padded_units * padded_k)


def _shape_flags(kernel: str, dt: torch.dtype, prec: str, consts: dict, d2l_cfg, large_cfg, cfg) -> dict:
    """d2l_shape / large_shape / useful_mac_fraction for one planned build."""
    default = prec == dot_precision(dt)
    flags = dict(d2l_shape=default and (cfg, dt) == (d2l_cfg, D2L[2]),
                 large_shape=default and (cfg, dt) == (large_cfg, LARGE[2]))
    for name, (b, h, _) in (("d2l_shape", D2L), ("large_shape", LARGE)):
        if flags[name]:
            flags["useful_mac_fraction"] = useful_mac_fraction(kernel, consts, b, h)
    return flags


def _shape_picks(major: int, gates: int) -> set:
    """The persistent configurations a cell of ``gates`` gate blocks runs at the d2l and large
    shapes, in every dtype (fp32, bf16, fp16)."""
    picks = set()
    for b, h, _ in (D2L, LARGE):
        for dt in TYPE:
            cfg = persistent_config(b, h, dt, arch=major, gates=gates)[0]
            if cfg is not None:
                picks.add((cfg, dt))
    return picks


def _resource_extremes(major: int, gates: int) -> set:
    """The persistent configurations that hold the most on chip, in fp32 and bf16: the largest W
    slice (BLOCK_K + BLOCK_K2) with the widest batch tile, once with a one-part and once with a
    two-part (BLOCK_K2 > 0) reduction — where shared memory and registers run out first. fp16 has
    bf16's sizes and code (another 16-bit type), so its extremes add no new limit."""
    choices = persistent_choices(major, gates)
    extremes = set()
    for dt in (torch.float32, torch.bfloat16):
        for two_part in (False, True):
            pool = [(c, d) for c, d in choices if d == dt and (c.block_k2 > 0) == two_part]
            if pool:
                extremes.add(max(pool, key=lambda cd: (cd[0].block_k + cd[0].block_k2, cd[0].block_b)))
    return extremes


def representative_persistent(major: int, gates: int) -> set:
    """The persistent configurations the tests compile for a cell of ``gates`` gate blocks: what
    the d2l and large shapes pick, and the resource extremes."""
    return _shape_picks(major, gates) | _resource_extremes(major, gates)


def planned_builds(arch: str, representative: bool = False) -> list[KernelBuild]:
    """A build for every configuration reachable from the launchers on ``arch``.

    ``representative`` (what the tests compile, to keep a cold-cache ``make test`` within its
    budget): of each cell type's persistent set only :func:`representative_persistent`; every step
    build of the LSTM, and of the other cell types (the same skeleton, another CELL) the largest
    tile per dtype; of the cell level only the widest block (1024 with 8 warps: the most elements
    per thread, so the most registers; the narrower blocks run the same elementwise code). 176
    builds on sm_90 and 172 on sm_80 instead of 612 and 576; ``lstm-triton kernels``
    (``LSTM_TRITON_AOT=all`` in the tests) builds them all."""
    major = int(arch.removeprefix("sm_")) // 10
    plans = []
    pointwise = reachable_pointwise_configs()
    for cfg in pointwise[-1:] if representative else pointwise:
        for dt in TYPE:
            for name in ("cell_forward_kernel", "cell_backward_kernel"):
                # CELL (cell_math.py) unset is the LSTM; GRU and the two plain RNNs are their own builds.
                for cell in ({}, {"CELL": GRU}, {"CELL": RNN_TANH}, {"CELL": RNN_RELU}):
                    plans.append(KernelBuild(name, "cell", TYPE[dt], {"BLOCK": cfg.block, **cell}, cfg.num_warps, arch))
    d2l_step, large_step = step_config(*D2L), step_config(*LARGE)
    step_configs = reachable_step_configs()
    largest_step = {dt: max((c for c, d in step_configs if d == dt), key=lambda c: c.block_b * c.block_h)
                    for dt in {d for _, d in step_configs}}
    for cfg, dt in step_configs:
        precisions = ("ieee", "tf32") if dt == torch.float32 else (dot_precision(dt),)
        for prec in precisions:
            consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k, "PRECISION": prec}
            for name in ("step_forward_kernel", "step_backward_kernel"):
                flags = _shape_flags(name, dt, prec, consts, d2l_step, large_step, cfg)
                plans.append(KernelBuild(name, "step", TYPE[dt], dict(consts), cfg.num_warps, arch, **flags))
                if representative and cfg != largest_step[dt]:
                    continue  # the other cell types: the same skeleton, at its largest tile
                for cell in (GRU, RNN_TANH, RNN_RELU):  # the rated shapes are the LSTM's: no flags
                    plans.append(KernelBuild(name, "step", TYPE[dt], {**consts, "CELL": cell}, cfg.num_warps, arch))
    d2l_cfg = persistent_config(*D2L, arch=major)[0]
    large_cfg = persistent_config(*LARGE, arch=major)[0]
    for cell in (LSTM, GRU, RNN_TANH, RNN_RELU):  # each cell type has its own reachable set (its W slice)
        choices = persistent_choices(major, GATES[cell])
        wanted = representative_persistent(major, GATES[cell]) if representative else choices
        for cfg, dt in sorted(choices, key=lambda cd: (str(cd[1]), cd[0].reduction, cd[0].block_b)):
            if (cfg, dt) not in wanted:
                continue
            precisions = ("ieee", "tf32") if dt == torch.float32 else (dot_precision(dt),)
            for prec in precisions:
                consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k,
                          "BLOCK_K2": cfg.block_k2, "SPLIT": cfg.split_k, "PRECISION": prec, "MAX_SPINS": MAX_SPINS,
                          **({"CELL": cell} if cell != LSTM else {})}
                for name in ("persistent_forward_kernel", "persistent_backward_kernel"):
                    # the rated shapes are the LSTM's: GRU/RNN rows get no flags
                    flags = _shape_flags(name, dt, prec, consts, d2l_cfg, large_cfg, cfg) if cell == LSTM else {}
                    plans.append(KernelBuild(
                        name, "persistent", TYPE[dt], dict(consts), cfg.num_warps, arch, num_stages=1, **flags,
                        max_programs=choices[(cfg, dt)], grid_fits_sms=choices[(cfg, dt)] <= SM_COUNT[major]))
    return plans


def _compile_one(build: KernelBuild, sass: bool = False) -> KernelBuild:
    return compile_build(build, KERNELS[build.kernel], sass)


def build_all(arch: str = "sm_90", workers: int | None = None, representative: bool = False,
              rated_only: bool = False, sass: bool = False) -> list[KernelBuild]:
    """Compile every planned build, in parallel processes (each compile is single-threaded).
    ``rated_only``: only the builds the d2l and large shapes pick (``d2l_shape``/``large_shape``);
    ``sass``: count the SASS MMAs of every build, not only of those."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    plans = planned_builds(arch, representative)
    if rated_only:
        plans = [b for b in plans if b.d2l_shape or b.large_shape]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(partial(_compile_one, sass=sass), plans))


def format_table(builds: list[KernelBuild]) -> str:
    import pandas as pd

    df = pd.DataFrame([asdict(b) for b in builds])
    df["constexprs"] = df["constexprs"].map(lambda d: " ".join(f"{k}={v}" for k, v in d.items()))
    df["shape"] = ["d2l" if d else "large" if g else "" for d, g in zip(df["d2l_shape"], df["large_shape"])]
    df["constexprs"] = df["constexprs"].str.replace(f" MAX_SPINS={MAX_SPINS}", "").str.replace(" BLOCK_K2=0", "")
    cols = ["kernel", "level", "dtype", "constexprs", "num_warps", "registers", "spill_bytes", "shared_bytes",
            "shared_fits", "mma_instructions", "sass_mma_instructions", "max_programs", "grid_fits_sms", "shape",
            "useful_mac_fraction"]
    return df[cols].to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lstm-triton kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", choices=("sm_80", "sm_90"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--representative", action="store_true",
                        help="GRU/RNN persistent builds only where the d2l and large shapes land (the tests' set)")
    parser.add_argument("--rated", action="store_true",
                        help="only the builds the d2l and large shapes pick (the GPU check's SASS rows)")
    parser.add_argument("--sass", action="store_true",
                        help="disassemble every build to count its SASS MMAs (default: the d2l/large rows)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        print("lstm-triton kernels: error: unset TRITON_INTERPRET to compile for a GPU", file=sys.stderr)
        return 2
    builds = build_all(args.arch, representative=args.representative, rated_only=args.rated, sass=args.sass)
    print(json.dumps([asdict(b) for b in builds]) if args.json else format_table(builds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
