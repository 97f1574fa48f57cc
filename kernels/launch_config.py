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


# Set by the tests' multi-program harness (tests/multiprogram.py), which runs a grid's programs as
# concurrent threads under the interpreter: then the persistent level may launch the GPU's grid
# (several programs meeting at its barrier), sized as on an H100/H200 (sm_90, 132 SMs).
_concurrent_programs_under_interpreter = False
INTERPRETER_ARCH = 9


def set_interpreter_concurrent_programs(enabled: bool) -> None:
    """Declare that interpreted grids run their programs concurrently (test harness only)."""
    global _concurrent_programs_under_interpreter
    _concurrent_programs_under_interpreter = bool(enabled)


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


# ----------------------------------------------------------------------------- persistent level

try:  # cooperative launches (Triton ≥ 3.3 on NVIDIA): the driver refuses a grid that cannot be co-resident
    from triton.backends.nvidia.compiler import CUDAOptions

    COOPERATIVE_LAUNCH = "launch_cooperative_grid" in CUDAOptions.__dataclass_fields__
except ImportError:  # pragma: no cover - non-NVIDIA builds of triton
    COOPERATIVE_LAUNCH = False
MAX_SPINS = 1 << 22  # barrier polls before a program gives up and flags a timeout (seconds, not a hang)
PERSISTENT_MAX_BATCH = 64  # one batch tile per program
PERSISTENT_MAX_HIDDEN = 1024
# Shared memory a persistent program may use, by compute-capability major: an H100/H200 block gets
# at most 227 KB, an A100 block 163 KB; keep a margin. The compiler stages the W_hh slice and the
# h (or dG) operand tile there: estimate = (4·BLOCK_K·BLOCK_H + BLOCK_B·BLOCK_K)·elt + 4 KB, which
# matches what the AOT report reads from the cubins (lstm-triton kernels).
SHARED_BUDGET = {8: 160 * 1024, 9: 220 * 1024}
SM_COUNT = {8: 108, 9: 132}  # A100, H100/H200: used when no device is present (AOT enumeration)


@dataclass(frozen=True)
class PersistentConfig:
    """One program per BLOCK_H hidden units (all four gates), all B rows in one BLOCK_B tile,
    the W_hh slice held as four (BLOCK_K × BLOCK_H) tiles with BLOCK_K = next_pow2(H)."""

    block_b: int
    block_h: int
    block_k: int
    num_warps: int


def _device_limits(device) -> tuple[int, int, int | None]:
    """(compute-capability major, SM count, shared-memory budget or None) of a CUDA device."""
    props = torch.cuda.get_device_properties(device)
    optin = getattr(props, "shared_memory_per_block_optin", None)  # 227 KB on H100, 99 KB on sm_89
    return props.major, props.multi_processor_count, (optin - 7 * 1024) if optin else None


def persistent_config(batch: int, hidden: int, dtype: torch.dtype, device=None, *,
                      arch: int | None = None, sms: int | None = None) -> tuple[PersistentConfig | None, str]:
    """The persistent launch for (B, H, dtype), or ``(None, reason)`` when it cannot hold it.

    ``arch``/``sms`` override the device (AOT enumeration without a GPU)."""
    if batch > PERSISTENT_MAX_BATCH:
        return None, f"B={batch} > {PERSISTENT_MAX_BATCH}: the persistent kernel keeps all rows in one tile"
    if hidden > PERSISTENT_MAX_HIDDEN:
        return None, f"H={hidden} > {PERSISTENT_MAX_HIDDEN}: the W_hh slice would not stay on chip"
    # Two batch tiles (16, 64) and K tiles from 64 up keep the set of compiled variants small
    # (every one is compiled ahead of time in the tests); masks cover the padding.
    block_b = 16 if batch <= 16 else PERSISTENT_MAX_BATCH
    block_k = _pow2(hidden, 64, PERSISTENT_MAX_HIDDEN)
    if arch is None and _interpreter_tiles():
        return PersistentConfig(block_b, block_k, block_k, 4), "interpreter: one program owns every unit"
    if arch is None and interpreter_on():
        if not _concurrent_programs_under_interpreter:
            return None, "GPU tiles under the interpreter: several programs cannot meet at a barrier there"
        arch = INTERPRETER_ARCH  # the multi-program harness: the exact sm_90 grid and tiles
    budget = None
    if arch is None:
        if device is None or torch.device(device).type != "cuda":
            return None, "the persistent kernel needs a CUDA device (or the interpreter)"
        arch, sms, budget = _device_limits(device)
    sms = sms or SM_COUNT.get(arch, 108)
    budget = budget or SHARED_BUDGET.get(arch, SHARED_BUDGET[8])
    elt = torch.finfo(dtype).bits // 8
    block_h = 16
    while triton.cdiv(hidden, block_h) > sms:  # more units per program until the grid fits the SMs
        block_h *= 2
    w_bytes = 4 * block_k * block_h * elt
    shared = w_bytes + block_b * block_k * elt + 4096
    if shared > budget:
        return None, (f"W_hh slice ({w_bytes // 1024} KB) and operand tile need ~{shared // 1024} KB of shared "
                      f"memory per program, over the {budget // 1024} KB budget of sm_{arch}0")
    num_warps = 4 if w_bytes <= 32 * 1024 else 8
    return PersistentConfig(block_b, block_h, block_k, num_warps), (
        f"{triton.cdiv(hidden, block_h)} programs ≤ {sms} SMs, ~{shared // 1024} KB shared memory each")


def reachable_persistent_configs(arch: int) -> list[tuple[PersistentConfig, torch.dtype]]:
    """Every (PersistentConfig, dtype) that :func:`persistent_config` can return on ``arch``."""
    seen = set()
    for dt in DTYPES:
        for b in (1, 17):
            for h in range(16, PERSISTENT_MAX_HIDDEN + 1, 16):
                cfg, _ = persistent_config(b, h, dt, arch=arch)
                if cfg is not None:
                    seen.add((cfg, dt))
    return sorted(seen, key=lambda cd: (str(cd[1]), cd[0].block_k, cd[0].block_b, cd[0].block_h))
