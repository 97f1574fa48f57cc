"""The one place that decides launch settings (block sizes, warps, dot precision) for every level.

Rules: ``tl.dot`` tiles are at least 16 in every dimension (GPUs require it); powers of two
(``tl.arange``); masks handle the remainder.

Under the interpreter (TRITON_INTERPRET=1) every program and every loop iteration is a round of
numpy calls, so cost grows with programs × iterations, not with tile size. There the launchers
pick larger tiles (same kernels, same masks, other constexprs) so that a d2l-sized training run
on CPU takes seconds per epoch, not minutes. :func:`use_gpu_tiles` switches the interpreter back
to the exact GPU tiles; the tests run both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


_gpu_tiles_under_interpreter = False


def use_gpu_tiles(enabled: bool) -> None:
    """Make the interpreter use the tiles a GPU would get (for tests of those exact configs)."""
    global _gpu_tiles_under_interpreter
    _gpu_tiles_under_interpreter = bool(enabled)


def _interpreter_tiles() -> bool:
    return interpreter_on() and not _gpu_tiles_under_interpreter


def _pow2(n: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, triton.next_power_of_2(n)))


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's own matmul setting (ieee unless the user allowed tf32)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


@dataclass(frozen=True)
class PointwiseConfig:
    """The cell level's gate/cell kernel: one program per BLOCK (batch, hidden) elements."""

    block: int
    num_warps: int


def pointwise_config(num_elements: int) -> PointwiseConfig:
    if _interpreter_tiles():
        return PointwiseConfig(block=_pow2(num_elements, 128, 1 << 14), num_warps=4)
    block = _pow2(num_elements, 128, 1024)
    return PointwiseConfig(block=block, num_warps=4 if block <= 512 else 8)


@dataclass(frozen=True)
class StepConfig:
    """The step level's GEMM-with-epilogue kernels: a (BLOCK_B × BLOCK_H) tile of (batch, unit)
    per program, all four gates of those units, reducing over K in BLOCK_K chunks."""

    block_b: int
    block_h: int
    block_k: int
    num_warps: int


def step_config(batch: int, hidden: int, dtype: torch.dtype) -> StepConfig:
    block_b = _pow2(batch, 16, 64)
    if _interpreter_tiles():
        wide = _pow2(hidden, 16, 256)
        return StepConfig(block_b=block_b, block_h=wide, block_k=wide, num_warps=4)
    # Narrow hidden slices give more programs when the batch is small (the d2l shape has one
    # batch tile): 16 units -> H/16 programs.
    block_h = 16 if batch <= 32 else 32
    block_k = 32 if dtype == torch.float32 else 64
    return StepConfig(block_b=block_b, block_h=block_h, block_k=block_k, num_warps=4)


DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def reachable_step_configs(max_batch: int = 1024) -> list[tuple[StepConfig, torch.dtype]]:
    """Every (StepConfig, dtype) that :func:`step_config` can return: the AOT test compiles them all."""
    assert not _interpreter_tiles(), "GPU configurations are only enumerated with the interpreter off"
    seen = {(step_config(b, 256, dt), dt) for dt in DTYPES for b in range(1, max_batch + 1)}
    return sorted(seen, key=lambda cd: (str(cd[1]), cd[0].block_b, cd[0].block_h))


def reachable_pointwise_configs(max_elements: int = 1 << 16) -> list[PointwiseConfig]:
    """Every PointwiseConfig that :func:`pointwise_config` can return."""
    assert not _interpreter_tiles(), "GPU configurations are only enumerated with the interpreter off"
    sizes = [1 << p for p in range(max_elements.bit_length())]
    return sorted({pointwise_config(n) for n in sizes}, key=lambda c: c.block)
