"""What each GPU-check stage compiles on a cold Triton cache, compiled here ahead of time for sm_90
and timed: the measurement behind bench/gpu_check.py's stage deadlines.

    python -m bench.gpu_stage_builds [--arch sm_90]      (TRITON_INTERPRET unset; an empty TRITON_CACHE_DIR)

A stage's builds are the kernel configurations its launches pick (lstm_triton.kernels.launch_config)
at its shapes, dtypes and dot precisions, as lstm_triton.layers.kernel_report builds them; each
stage counts only the builds no earlier stage compiled (the cache is shared). The stages compile in
one process, one build after another, as here, so a stage's cold compile on the device is about the
sum of its builds' seconds (times the ratio of the two machines' per-core speed). A JIT launch may
compile a configuration more than once (an integer argument divisible by 16 or not is its own
specialization), so these are lower bounds by up to that factor. The tests stage cannot be enumerated
this way (its shapes are many); it is sized from the mean seconds per build.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch
import triton

from lstm_triton.kernels.cell_math import GATES, GRU, LSTM
from lstm_triton.kernels.launch_config import MAX_SPINS, dot_precision, persistent_config, pointwise_config, step_config
from lstm_triton.layers.kernel_report import TYPE, KernelBuild, compile_build

from .gpu_stages import GPU_SHAPES, PRECISIONS, VARLEN_GPU, VARLEN_PRECISIONS

CELLS = {"lstm": LSTM, "gru": GRU}


def _precision(name: str) -> tuple[torch.dtype, str]:
    dtype, tf32 = PRECISIONS[name]
    return dtype, ("tf32" if tf32 else "ieee") if dtype == torch.float32 else dot_precision(dtype)


def builds_for(cell: str, batch: int, hidden: int, precision: str, levels, arch: str) -> list[KernelBuild]:
    """The builds a forward+backward of ``cell`` at (batch, hidden) in ``precision`` launches at each level."""
    major = int(arch.removeprefix("sm_")) // 10
    dtype, prec = _precision(precision)
    cell_id = CELLS[cell]
    extra = {"CELL": cell_id} if cell_id != LSTM else {}
    out = []
    if "cell" in levels:
        cfg = pointwise_config(batch * hidden)
        out += [KernelBuild(k, "cell", TYPE[dtype], {"BLOCK": cfg.block, **extra}, cfg.num_warps, arch)
                for k in ("cell_forward_kernel", "cell_backward_kernel")]
    if "step" in levels:
        cfg = step_config(batch, hidden, dtype)
        consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k, "PRECISION": prec, **extra}
        out += [KernelBuild(k, "step", TYPE[dtype], dict(consts), cfg.num_warps, arch)
                for k in ("step_forward_kernel", "step_backward_kernel")]
    if "persistent" in levels:
        cfg = persistent_config(batch, hidden, dtype, arch=major, gates=GATES[cell_id])[0]
        if cfg is not None:
            consts = {"BLOCK_B": cfg.block_b, "BLOCK_H": cfg.block_h, "BLOCK_K": cfg.block_k, "BLOCK_K2": cfg.block_k2,
                      "SPLIT": cfg.split_k, "PRECISION": prec, "MAX_SPINS": MAX_SPINS, **extra}
            out += [KernelBuild(k, "persistent", TYPE[dtype], dict(consts), cfg.num_warps, arch, num_stages=1)
                    for k in ("persistent_forward_kernel", "persistent_backward_kernel")]
    return out


def stage_builds(arch: str) -> dict[str, list[KernelBuild]]:
    """Each stage's builds (bench/gpu_stages.py's cases), without those an earlier stage compiled."""
    levels = ("cell", "step", "persistent")
    d2l, large = ((b, h) for _, _, b, _, h in GPU_SHAPES)
    _, vb, _, vh = VARLEN_GPU
    wanted = {
        "race": [("lstm", *d2l, "fp32-tf32", ("persistent",)), ("lstm", *large, "bf16", ("persistent",)),
                 ("gru", *d2l, "fp32-tf32", ("persistent",))],
        "layers": [(cell, b, h, p, levels) for cell, precisions in (("lstm", tuple(PRECISIONS)),
                                                                  ("gru", ("fp32-tf32", "bf16")))
                   for _, _, b, _, h in GPU_SHAPES for p in precisions],
        # ours packed (fusion auto) and padded with lengths=: the step or persistent level
        "varlen": [("lstm", vb, vh, p, ("step", "persistent")) for p in VARLEN_PRECISIONS],
        "e2e": [("lstm", *d2l, "fp32-tf32", levels)],
    }
    seen, out = set(), {}
    for stage, cases in wanted.items():
        out[stage] = []
        for cell, b, h, p, lv in cases:
            for build in builds_for(cell, b, h, p, lv, arch):
                key = (build.kernel, build.dtype, tuple(sorted(build.constexprs.items())), build.num_warps)
                if key not in seen:
                    seen.add(key)
                    out[stage].append(build)
    return out


def _cpu_seconds() -> float:
    """This process's and its finished children's (ptxas, cuobjdump) CPU time."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", choices=("sm_80", "sm_90"))
    args = parser.parse_args(argv)
    from lstm_triton.layers.kernel_report import KERNELS

    # (bench.gpu_stages sets TRITON_INTERPRET on a CPU machine, but only after the kernels were made)
    if not isinstance(KERNELS["cell_forward_kernel"], triton.runtime.JITFunction):
        print("unset TRITON_INTERPRET to compile for a GPU", file=sys.stderr)
        return 2
    os.environ.pop("TRITON_INTERPRET", None)  # else launch_config picks the interpreter's (huge) tiles

    print(f"{'stage':8} {'builds':>6} {'wall s':>7} {'CPU s':>7}  (cold, one process, one build after another)")
    total_n = total_cpu = 0.0
    for stage, builds in stage_builds(args.arch).items():
        wall, cpu = time.perf_counter(), _cpu_seconds()
        slow = []
        for build in builds:
            one = _cpu_seconds()
            compile_build(build, KERNELS[build.kernel])
            if (one := _cpu_seconds() - one) > 10:
                consts = " ".join(f"{k}={v}" for k, v in build.constexprs.items() if k != "MAX_SPINS")
                slow.append(f"{build.kernel} {build.dtype} {consts}: {one:.0f} CPU-s")
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        total_n, total_cpu = total_n + len(builds), total_cpu + cpu
        print(f"{stage:8} {len(builds):6d} {wall:7.1f} {cpu:7.1f}  "
              + ", ".join(sorted({f"{b.level}/{b.dtype}" for b in builds})), flush=True)
        for line in slow:
            print(f"         slow: {line}", flush=True)
    if total_n:
        print(f"mean {total_cpu / total_n:.2f} CPU-s per build; tests stage (~300 JIT variants, per the issue): "
              f"~{300 * total_cpu / total_n:.0f} CPU-s, over 16 xdist workers ~{300 * total_cpu / total_n / 16:.0f} s "
              f"if perfectly spread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
