"""Compile every kernel configuration the launchers can pick, ahead of time, for a GPU target,
and report registers, spills and shared memory (no GPU needed: ptxas ships in the triton wheel).

    python -m lstm_triton.kernel_report --arch sm_90 [--json]

Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled); the CLI and the
tests call it in a subprocess for that reason.
"""

from __future__ import annotations

import argparse
import json
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

from .kernels import lstm_cell, lstm_persistent, lstm_step
from .kernels.launch_config import (
    MAX_SPINS,
    SM_COUNT,
    dot_precision,
    persistent_config,
    reachable_persistent_configs,
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
    d2l_shape: bool = False  # the config picked for B=32, H=256, fp32
    large_shape: bool = False  # the config picked for B=16, H=768, bf16
    max_programs: int = 0  # persistent: largest grid this config runs (H ≤ BLOCK_K); 0 = no barrier
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


def _resource_usage(cubin: bytes) -> dict[str, int]:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    usage = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {k: int(v) for k, v in usage.items()}


def compile_build(build: KernelBuild, fn) -> KernelBuild:
    major = int(build.arch.removeprefix("sm_"))
    sig, attrs = _signature(fn, {v: k for k, v in TYPE.items()}[build.dtype])
    src = ASTSource(fn, sig, constexprs=build.constexprs, attrs=attrs)
    options = {"num_warps": build.num_warps, "num_stages": build.num_stages}
    compiled = triton.compile(src, target=GPUTarget("cuda", major, 32), options=options)
    build.cp_async = compiled.asm["ptx"].count("cp.async.")
    usage = _resource_usage(compiled.asm["cubin"])
    build.registers, build.spill_bytes, build.stack_bytes = usage["REG"], usage["LOCAL"], usage["STACK"]
    build.shared_bytes = max(int(compiled.metadata.shared), usage["SHARED"])
    build.shared_fits = build.shared_bytes <= SHARED_LIMIT[build.arch]
    return build


def planned_builds(arch: str) -> list[KernelBuild]:
    """A build for every configuration reachable from the launchers on ``arch``."""
    major = int(arch.removeprefix("sm_")) // 10
    plans = []
    for cfg in reachable_pointwise_configs():
        for dt in TYPE:
            for name in ("cell_forward_kernel", "cell_backward_kernel"):
                plans.append(KernelBuild(name, "cell", TYPE[dt], {"BLOCK": cfg.block}, cfg.num_warps, arch))
    for cfg, dt in reachable_step_configs():
        precisions = ("ieee", "tf32") if dt == torch.float32 else (dot_precision(dt),)
        for prec in precisions:
            consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k, "PRECISION": prec}
            d2l = cfg == step_config(32, 256, dt) and prec == dot_precision(dt) and dt == torch.float32
            for name in ("step_forward_kernel", "step_backward_kernel"):
                plans.append(KernelBuild(name, "step", TYPE[dt], dict(consts), cfg.num_warps, arch, d2l_shape=d2l))
    d2l_cfg = persistent_config(32, 256, torch.float32, arch=major)[0]
    large_cfg = persistent_config(16, 768, torch.bfloat16, arch=major)[0]
    for cfg, dt in reachable_persistent_configs(major):
        precisions = ("ieee", "tf32") if dt == torch.float32 else (dot_precision(dt),)
        programs = cfg.block_k // cfg.block_h
        for prec in precisions:
            consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k, "PRECISION": prec,
                      "MAX_SPINS": MAX_SPINS}
            default = prec == dot_precision(dt)
            for name in ("persistent_forward_kernel", "persistent_backward_kernel"):
                plans.append(KernelBuild(
                    name, "persistent", TYPE[dt], dict(consts), cfg.num_warps, arch, num_stages=1,
                    d2l_shape=default and dt == torch.float32 and cfg == d2l_cfg,
                    large_shape=default and dt == torch.bfloat16 and cfg == large_cfg,
                    max_programs=programs, grid_fits_sms=programs <= SM_COUNT[major]))
    return plans


def _compile_one(build: KernelBuild) -> KernelBuild:
    return compile_build(build, KERNELS[build.kernel])


def build_all(arch: str = "sm_90", workers: int | None = None) -> list[KernelBuild]:
    """Compile every planned build, in parallel processes (each compile is single-threaded)."""
    from concurrent.futures import ProcessPoolExecutor

    plans = planned_builds(arch)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(_compile_one, plans))


def format_table(builds: list[KernelBuild]) -> str:
    import pandas as pd

    df = pd.DataFrame([asdict(b) for b in builds])
    df["constexprs"] = df["constexprs"].map(lambda d: " ".join(f"{k}={v}" for k, v in d.items()))
    df["shape"] = ["d2l" if d else "large" if g else "" for d, g in zip(df["d2l_shape"], df["large_shape"])]
    df["constexprs"] = df["constexprs"].str.replace(f" MAX_SPINS={MAX_SPINS}", "")
    cols = ["kernel", "level", "dtype", "constexprs", "num_warps", "registers", "spill_bytes", "shared_bytes",
            "shared_fits", "max_programs", "grid_fits_sms", "shape"]
    return df[cols].to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lstm-triton kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", choices=("sm_80", "sm_90"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        print("lstm-triton kernels: error: unset TRITON_INTERPRET to compile for a GPU", file=sys.stderr)
        return 2
    builds = build_all(args.arch)
    print(json.dumps([asdict(b) for b in builds]) if args.json else format_table(builds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
