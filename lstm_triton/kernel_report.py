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

from .kernels import lstm_cell, lstm_step
from .kernels.launch_config import (
    dot_precision,
    reachable_pointwise_configs,
    reachable_step_configs,
    step_config,
)

TYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Which pointer arguments carry the input dtype (the rest are fp32 state/activations).
DT_POINTERS = {
    "cell_forward_kernel": {"hw_ptr", "y_ptr"},
    "cell_backward_kernel": {"dh_rec_ptr", "dg_ptr"},
    "step_forward_kernel": {"h_prev_ptr", "w_ptr", "y_ptr"},
    "step_backward_kernel": {"dg_next_ptr", "w_ptr", "dg_ptr"},
}


@dataclass
class KernelBuild:
    kernel: str
    level: str
    dtype: str
    constexprs: dict
    num_warps: int
    arch: str
    registers: int = -1
    spill_bytes: int = -1  # local memory per thread (register spills)
    stack_bytes: int = -1
    shared_bytes: int = -1
    d2l_shape: bool = False  # the config picked for B=32, H=256


def _signature(fn, dtype: torch.dtype) -> tuple[dict, dict]:
    sig, attrs = {}, {}
    for idx, (name, param) in enumerate(zip(fn.arg_names, fn.params)):
        if param.is_constexpr:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + (TYPE[dtype] if name in DT_POINTERS[fn.__name__] else "fp32")
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
    compiled = triton.compile(src, target=GPUTarget("cuda", major, 32), options={"num_warps": build.num_warps})
    usage = _resource_usage(compiled.asm["cubin"])
    build.registers, build.spill_bytes, build.stack_bytes = usage["REG"], usage["LOCAL"], usage["STACK"]
    build.shared_bytes = max(int(compiled.metadata.shared), usage["SHARED"])
    return build


def planned_builds(arch: str) -> list[tuple[KernelBuild, object]]:
    """(build, kernel) for every configuration reachable from the launchers."""
    plans = []
    for cfg in reachable_pointwise_configs():
        for dt in TYPE:
            for fn in (lstm_cell.cell_forward_kernel, lstm_cell.cell_backward_kernel):
                build = KernelBuild(fn.__name__, "cell", TYPE[dt], {"BLOCK": cfg.block}, cfg.num_warps, arch)
                plans.append((build, fn))
    for cfg, dt in reachable_step_configs():
        precisions = ("ieee", "tf32") if dt == torch.float32 else (dot_precision(dt),)
        for prec in precisions:
            consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k, "PRECISION": prec}
            d2l = cfg == step_config(32, 256, dt) and prec == dot_precision(dt)
            for fn in (lstm_step.step_forward_kernel, lstm_step.step_backward_kernel):
                plans.append((KernelBuild(fn.__name__, "step", TYPE[dt], dict(consts), cfg.num_warps, arch,
                                          d2l_shape=d2l), fn))
    return plans


def build_all(arch: str = "sm_90") -> list[KernelBuild]:
    return [compile_build(build, fn) for build, fn in planned_builds(arch)]


def format_table(builds: list[KernelBuild]) -> str:
    import pandas as pd

    df = pd.DataFrame([asdict(b) for b in builds])
    df["constexprs"] = df["constexprs"].map(lambda d: " ".join(f"{k}={v}" for k, v in d.items()))
    cols = ["kernel", "level", "dtype", "constexprs", "num_warps", "registers", "spill_bytes", "shared_bytes",
            "d2l_shape"]
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
