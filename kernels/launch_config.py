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

import functools
import os
from dataclasses import dataclass

import torch
import triton

from .device import guarded_device
from .targets import Target, get_target, hip_target, rocm_torch


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


def _resolve_cuda_fp32_precision(op_precision: str) -> str:
    """torch's lookup for a CUDA op's fp32 precision: the op's own setting, else the CUDA
    backend's ``all`` (``torch.backends.cudnn.fp32_precision``), else the generic one
    (``torch.backends.fp32_precision``); ``'none'`` at every level means IEEE."""
    precision = op_precision
    if precision == "none":
        precision = torch.backends.cudnn.fp32_precision
    if precision == "none":
        precision = torch.backends.fp32_precision
    return precision


def nn_lstm_uses_tf32(target: Target | None = None) -> bool:
    """Whether ``torch.nn.LSTM`` runs fp32 CUDA inputs with TF32 tensor-core math right now
    (on an AMD ``target``: :func:`_rocm_nn_lstm_uses_tf32`).

    With cuDNN enabled (the default) nn.LSTM is a cuDNN RNN, whose descriptor gets TF32 math
    when ``allowTF32CuDNN(RNN)`` holds: ``torch.backends.cudnn.rnn.fp32_precision`` resolved as
    torch does (see :func:`_resolve_cuda_fp32_precision`) equals ``'tf32'``. Default: ``'tf32'``;
    the legacy ``torch.backends.cudnn.allow_tf32 = False`` sets it to ``'none'`` (IEEE).
    With cuDNN disabled nn.LSTM multiplies with cuBLAS, which follows the matmul setting
    (``torch.backends.cuda.matmul.fp32_precision``, IEEE by default).
    Torch without the per-op settings (< 2.9) only has ``cudnn.allow_tf32``.
    """
    if target is not None and target.is_hip:
        return _rocm_nn_lstm_uses_tf32(target)
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if not hasattr(rnn, "fp32_precision"):  # pragma: no cover - torch < 2.9
        if not torch.backends.cudnn.enabled:
            return bool(torch.backends.cuda.matmul.allow_tf32)
        return bool(torch.backends.cudnn.allow_tf32)
    # Never read the legacy allow_tf32 flags here: torch raises when they and the new settings disagree.
    op_precision = rnn.fp32_precision if torch.backends.cudnn.enabled else torch.backends.cuda.matmul.fp32_precision
    return _resolve_cuda_fp32_precision(op_precision) == "tf32"


def _rocm_nn_lstm_uses_tf32(target: Target) -> bool:
    """Whether nn.LSTM computes fp32 with TF32 (xf32) inputs on an AMD GPU of ``target``.

    Under a ROCm torch nn.LSTM is a MIOpen RNN while ``torch.backends.cudnn.enabled`` (ATen's
    ``_use_miopen``; fp32 and fp16 only — bf16 runs ATen's own cell, whose GEMMs are bf16). ATen's
    MIOpen RNN descriptor (``RNNDescriptorParams`` in aten/src/ATen/native/miopen/RNN_miopen.cpp)
    carries no math type, and MIOpen has no TF32 switch for RNNs: its fp32 GEMMs are IEEE fp32,
    whatever ``torch.backends.cudnn.rnn.fp32_precision`` says (on ROCm TF32 is opt-in and reaches
    MIOpen convolutions at most: pytorch/pytorch#190711). With MIOpen disabled nn.LSTM multiplies
    with hipBLAS(Lt), which follows the matmul setting, and only where the matrix units take
    xf32 (gfx942: ``target.has_tf32``)."""
    if torch.backends.cudnn.enabled or not target.has_tf32:
        return False
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):  # pragma: no cover - torch < 2.9
        return bool(matmul.allow_tf32)
    return _resolve_cuda_fp32_precision(matmul.fp32_precision) == "tf32"


@functools.cache
def _hip_target_of(index: int) -> Target:
    return hip_target(index)


def launch_target(device=None) -> Target | None:
    """The AMD target a launch on ``device`` (default: the device of the innermost
    device.on_device guard, i.e. the launcher's tensors) runs on under a ROCm torch; None on a
    CUDA torch, on the CPU and outside any guard (the NVIDIA rules apply, as before)."""
    device = guarded_device() if device is None else torch.device(device)
    if device is None or device.type != "cuda" or not rocm_torch():
        return None
    return _hip_target_of(device.index if device.index is not None else torch.cuda.current_device())


def dot_precision(dtype: torch.dtype, target: Target | None = None) -> str:
    """``tl.dot``'s ``input_precision`` for inputs of ``dtype``: fp32 follows the switch nn.LSTM
    follows (:func:`nn_lstm_uses_tf32`; TF32 by default, like cuDNN), so the drop-in computes in
    nn.LSTM's precision. fp16/bf16 dots ignore the setting ("tf32" is then Triton's default).

    On an AMD ``target`` (default: :func:`launch_target`, the launch's device under a ROCm torch)
    fp32 follows MIOpen (:func:`_rocm_nn_lstm_uses_tf32`: IEEE fp32, which the matrix units run
    as fp32 MFMAs) and fp16/bf16 take ``"ieee"``, the ROCm backend's default: it refuses
    ``"tf32"`` on every target but gfx942, whatever the dtype.

    The result is a constexpr of the kernels: the launchers read it at every launch, so changing
    torch's switch picks (and, the first time, compiles) the other kernel variant.
    """
    target = target or launch_target()
    if target is not None and target.is_hip:
        return "tf32" if dtype == torch.float32 and nn_lstm_uses_tf32(target) else "ieee"
    if dtype == torch.float32 and not nn_lstm_uses_tf32():
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
    # fp32 keeps 16 units for B > 32 too: its 64 × 32 tile spilled on sm_80 with IEEE dots (step
    # forward, LSTM and GRU: 208- and 120-byte stack frames, ptxas; the AOT report), and with 8 warps
    # the plain RNN's did (8 bytes).
    block_h = 16 if batch <= 32 or dtype == torch.float32 else 32
    block_k = 32 if dtype == torch.float32 else 64
    return StepConfig(block_b=block_b, block_h=block_h, block_k=block_k, num_warps=4)


def rescue_config(batch: int, hidden: int, dtype: torch.dtype) -> StepConfig:
    """Tiles of the persistent level's rescue kernels (lstm_step.rescue_*_kernel): one program per
    batch tile runs the step level's tile for every hidden slice and step, its loop-carried
    pointers on top of the tile's registers. They run only after a barrier timeout, so they take
    the smallest tiles: the step level's 32-row fp32 tile left them an 8-32 byte stack frame on
    sm_90 (ptxas), 16 × 16 none."""
    if _interpreter_tiles():
        return step_config(batch, hidden, dtype)
    return StepConfig(block_b=16, block_h=16, block_k=32 if dtype == torch.float32 else 64, num_warps=4)


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
try:  # the ROCm backend's (hipModuleLaunchCooperativeKernel; Triton 3.6 and 3.9 have it)
    from triton.backends.amd.compiler import HIPOptions

    HIP_COOPERATIVE_LAUNCH = "launch_cooperative_grid" in HIPOptions.__dataclass_fields__
except ImportError:  # pragma: no cover - builds of triton without the AMD backend
    HIP_COOPERATIVE_LAUNCH = False


@functools.cache
def _hip_device_cooperates(index: int) -> bool:
    """hipDeviceAttributeCooperativeLaunch of an AMD device, as Triton's HIP driver reads it (its
    launcher asserts it before a cooperative launch; False where the driver cannot say)."""
    try:
        return bool(triton.runtime.driver.active.utils.get_device_properties(index)["cooperativeLaunch"])
    except Exception:  # noqa: BLE001 - any failure of the query: launch without the cooperative flag
        return False


def cooperative_launch(device) -> bool:
    """Whether a persistent launch on ``device`` asks for a cooperative grid (the driver then
    refuses a grid whose programs cannot all be resident). CUDA torch: :data:`COOPERATIVE_LAUNCH`.
    ROCm torch: Triton's ROCm backend has the option and the device supports it; without, the
    persistent level relies on its resident-grid rule (grid ≤ CUs) and on the barrier's spin limit
    (a timeout is repaired by the rescue kernels, lstm_step.rescue_*)."""
    target = launch_target(device)
    if target is None:
        return COOPERATIVE_LAUNCH
    device = torch.device(device)
    return HIP_COOPERATIVE_LAUNCH and _hip_device_cooperates(device.index if device.index is not None
                                                            else torch.cuda.current_device())
MAX_SPINS = 1 << 22  # barrier polls before a program gives up and flags a timeout (seconds, not a hang)
PERSISTENT_MAX_HIDDEN = 1024
PERSISTENT_BLOCK_H = 16  # hidden units per program: the most programs, the smallest W slice
PERSISTENT_BATCH_TILES = (16, 32)  # rows per program: 16 for B ≤ 16, else 32 where it fits (persistent_config)
# Registers (the AOT report, lstm-triton kernels: ptxas' stack frame and spill stores, sm_80 and sm_90).
# A program holds its (BLOCK_B × K) operand tile of h (or dG) in registers each step: 32-row tiles
# only while a row of it is at most 1.5 KB (fp32 K ≤ 384, bf16/fp16 K ≤ 768); beyond, the 32-row
# builds spill (fp32 K = 512 backward 32 bytes, bf16 K = 1024: 40 bytes backward, 392 forward
# unaligned), so 16-row tiles. For H > 128 not a multiple of 16 Triton cannot prove the rows'
# alignment, loads them element by element with an address register each, and the build spills
# (even with 16-row tiles: bf16 K = 1024 backward 360 bytes): those shapes run at the step level.
# IEEE fp32 dots (TF32 off) run on the FMA units with larger register tiles: 16-row tiles, K ≤ 256.
PERSISTENT_WIDE_ROW_BYTES = 1536
PERSISTENT_UNALIGNED_MAX_REDUCTION = 128
PERSISTENT_IEEE_MAX_REDUCTION = 256
INTERPRETER_MAX_BATCH = 64  # interpreter tiles: one program, so all rows in one tile
# Shared memory a persistent program may use, by compute-capability major: an H100/H200 block gets
# at most 227 KB, an A100 block 163 KB; keep a margin. The compiler stages the W_hh slice and the
# h (or dG) operand tile there: estimate = (G·K·BLOCK_H + BLOCK_B·K)·elt + 4 KB with
# K = BLOCK_K + BLOCK_K2 and G the cell's gate blocks (LSTM 4, GRU 3, RNN 1), which matches what the
# AOT report reads from the cubins (lstm-triton kernels).
SHARED_BUDGET = {8: 160 * 1024, 9: 220 * 1024}
SM_COUNT = {8: 108, 9: 132}  # A100, H100/H200: used when no device is present (AOT enumeration)
# AMD (targets.py): the ROCm backend keeps each program's W_hh slice in VGPRs and stages only the
# operand tile of h (or dG) in LDS — the compile report on gfx90a/gfx942/gfx950 reads LDS =
# BLOCK_B · max(BLOCK_K, BLOCK_K2) · elt, e.g. 32 KB at the d2l shape (32 rows × 256 fp32) and at
# bf16 K = 1024 (16 rows). The rule plans BLOCK_B · (BLOCK_K + BLOCK_K2) · elt + 4 KB of LDS (an
# upper bound) within the target's limit, and at most HIP_W_SLICE_VGPRS registers of each lane for
# the W slice: a workgroup of 8 waves puts 2 on each of a CU's 4 SIMDs, 256 of a lane's 512
# registers each; the largest slices (bf16 K = 1024, fp32 K = 512: 64 a lane) compile to at most
# 179 VGPRs, no AGPRs, no scratch (the report's ci set on gfx90a/gfx942/gfx950).
HIP_W_SLICE_VGPRS = 64


@dataclass(frozen=True)
class PersistentConfig:
    """Program (p, q) of a ``(cdiv(H, BLOCK_H), cdiv(B, BLOCK_B))`` grid owns hidden units
    ``p*BLOCK_H …`` (all G gates: LSTM 4, GRU 3, RNN 1) of batch rows ``q*BLOCK_B …``. Its W_hh slice
    is held as G (BLOCK_K × BLOCK_H) tiles plus, when ``block_k2 > 0``, G (BLOCK_K2 × BLOCK_H) tiles for
    reduction indices BLOCK_K … BLOCK_K + BLOCK_K2 − 1: tensor sizes must be powers of two, so
    two pieces cover H = 768 as 512 + 256 where one would pad it to 1024. Each piece is cut into
    ``split_k`` chunks along the reduction, a leading tensor axis: the dots are batched over the
    chunks, and Triton gives each warp its own chunks of a batched dot. Without the split every
    warp computed the whole (BLOCK_B × BLOCK_H) output (the tile has fewer 16 × 8 MMA tiles than
    a program has warps) and read the whole W slice from shared memory every step; split
    ``num_warps`` ways, each warp does 1/num_warps of the MMAs (the AOT report counts them), and
    one cross-warp sum adds the chunks."""

    block_b: int
    block_h: int
    block_k: int
    num_warps: int
    block_k2: int = 0
    split_k: int = 1

    @property
    def reduction(self) -> int:
        """Padded length of the H-long reduction (BLOCK_K + BLOCK_K2)."""
        return self.block_k + self.block_k2


def persistent_grid(batch: int, hidden: int, cfg: PersistentConfig) -> tuple[int, int]:
    """(hidden slices, batch tiles): the launch grid of ``cfg`` for (B, H)."""
    return triton.cdiv(hidden, cfg.block_h), triton.cdiv(batch, cfg.block_b)


def persistent_reduction_tiles(hidden: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_K2) covering an H-long reduction: next_pow2(H) (at least 64, as before:
    each extra size is another set of compiled variants), or, for 2^n < H ≤ 1.5·2^n with
    2^n ≥ 256, the pieces 2^n and 2^(n−1): H = 768 computes 768 products, not 1024, and the
    slice needs 25 % less shared memory. (Small H: the padding costs little time per step.)"""
    k = _pow2(hidden, 64, PERSISTENT_MAX_HIDDEN)
    if k >= 512 and hidden <= 3 * k // 4:
        return k // 2, k // 4
    return k, 0


def _device_limits(device) -> tuple[int, int, int | None]:
    """(compute-capability major, SM count, shared-memory budget or None) of a CUDA device."""
    props = torch.cuda.get_device_properties(device)
    optin = getattr(props, "shared_memory_per_block_optin", None)  # 227 KB on H100, 99 KB on sm_89
    return props.major, props.multi_processor_count, (optin - 7 * 1024) if optin else None


def persistent_config(batch: int, hidden: int, dtype: torch.dtype, device=None, *, arch: int | str | None = None,
                      sms: int | None = None, gates: int = 4,
                      precision: str | None = None) -> tuple[PersistentConfig | None, str]:
    """The persistent launch for (B, H, dtype), or ``(None, reason)`` when it cannot hold it.

    ``gates``: the cell's gate blocks of W_hh (cell_math.GATES: LSTM 4, GRU 3, RNN 1), which sets
    the W slice a program keeps on chip, hence the shared memory and the warps; the same rule
    decides for every cell type.

    Tiles: one program per 16 hidden units (all its gates): the most programs, the smallest W
    slice. Batch tiles of 16 rows for B ≤ 16, else 32 rows, as many as B needs along the grid's
    second axis (the d2l B = 32 runs one unpadded 32-row tile; B = 70 runs three). Not 64 rows:
    B ≤ 64 always fits as two 32-row tiles (≤ 128 programs), which halves each program's work
    per step (its warps split the reduction, so each one computes the whole rows × units tile),
    and every extra size is another set of compiled variants. No tile depends on the SM count,
    so every GPU picks from the set the AOT test compiles. The grid must fit the SMs (the
    barrier needs every program resident) and the W slice plus the operand tile the
    shared-memory budget, else ``None``.

    Spill-free builds only (see PERSISTENT_WIDE_ROW_BYTES): 32-row tiles only while a row of
    the operand tile is ≤ 1.5 KB and the dots use tensor cores; H > 128 must be a multiple of 16;
    IEEE fp32 dots (``precision``, default :func:`dot_precision`, what the launch will pass) only
    up to K = 256.

    ``arch``/``sms`` override the device (AOT enumeration without a GPU): ``arch`` a CUDA major
    (8, 9) or a target name of targets.py (``"sm_90"``, ``"gfx942"``). Under the interpreter with
    its own tiles: one program owns every row (B ≤ 64) and unit.

    AMD targets (``arch="gfx942"``, or a device under a ROCm torch: targets.hip_target) take the
    same tiles and rules, with compute units for SMs and their own on-chip check: the W slice in
    VGPRs, the operand tile in LDS (see HIP_W_SLICE_VGPRS). Their fp32 dots are IEEE, as MIOpen's
    (dot_precision), and run on the matrix units (fp32 MFMAs), so the IEEE limits above, which
    are about NVIDIA's FMA tiles, do not apply there.
    """
    if hidden > PERSISTENT_MAX_HIDDEN:
        return None, f"H={hidden} > {PERSISTENT_MAX_HIDDEN}: the W_hh slice would not stay on chip"
    block_k, block_k2 = persistent_reduction_tiles(hidden)
    if arch is None and _interpreter_tiles():
        if batch > INTERPRETER_MAX_BATCH:
            return None, (f"B={batch} > {INTERPRETER_MAX_BATCH}: under the interpreter the persistent kernel "
                          "runs as one program, all rows in one tile")
        return (PersistentConfig(_pow2(batch, 16, INTERPRETER_MAX_BATCH), _pow2(hidden, 16, PERSISTENT_MAX_HIDDEN),
                                 block_k, 4, block_k2, split_k=4), "interpreter: one program owns every row and unit")
    if arch is None and interpreter_on():
        if not _concurrent_programs_under_interpreter:
            return None, "GPU tiles under the interpreter: several programs cannot meet at a barrier there"
        arch = INTERPRETER_ARCH  # the multi-program harness: the exact sm_90 grid and tiles
    budget, target = None, None
    if arch is None:
        if device is None or torch.device(device).type != "cuda":
            return None, "the persistent kernel needs a CUDA device (or the interpreter)"
        target = launch_target(device)
        if target is None:
            arch, sms, budget = _device_limits(device)
    elif isinstance(arch, str):
        target = get_target(arch)
        if not target.is_hip:
            arch, target = target.major, None
    if target is not None:
        sms, budget = sms or target.compute_units, target.shared_budget
    sms = sms or SM_COUNT.get(arch, 108)
    budget = budget or SHARED_BUDGET.get(arch, SHARED_BUDGET[8])
    units_name = "CUs" if target is not None else "SMs"
    elt = torch.finfo(dtype).bits // 8
    block_h, reduction = PERSISTENT_BLOCK_H, block_k + block_k2
    if reduction > PERSISTENT_UNALIGNED_MAX_REDUCTION and hidden % 16:
        return None, (f"H={hidden} > {PERSISTENT_UNALIGNED_MAX_REDUCTION} is not a multiple of 16: the rows of h "
                      f"cannot be loaded as vectors and the persistent kernel's build for it spills registers")
    # IEEE fp32 dots run on NVIDIA's FMA units (larger register tiles); AMD's matrix units take fp32
    # (v_mfma_f32_*_f32), so there IEEE fp32 tiles are sized like the other dots'.
    ieee = (precision or dot_precision(dtype, target)) == "ieee" and target is None
    if ieee and reduction > PERSISTENT_IEEE_MAX_REDUCTION:
        return None, (f"IEEE fp32 dots (TF32 off) over K={reduction} > {PERSISTENT_IEEE_MAX_REDUCTION}: "
                      "the persistent kernel's FMA tiles spill registers")
    wide = not ieee and reduction * elt <= PERSISTENT_WIDE_ROW_BYTES
    block_b = PERSISTENT_BATCH_TILES[1] if batch > PERSISTENT_BATCH_TILES[0] and wide else PERSISTENT_BATCH_TILES[0]
    n_h, n_b = triton.cdiv(hidden, block_h), triton.cdiv(batch, block_b)
    if n_h * n_b > sms:
        return None, (f"B={batch}, H={hidden}: {n_h} hidden slices × {n_b} batch tiles = {n_h * n_b} programs, "
                      f"over the {sms} {units_name} that must hold the whole grid at once (grid barrier)")
    w_bytes = gates * reduction * block_h * elt
    if target is not None:
        return _hip_on_chip(target, w_bytes, block_b, block_h, block_k, block_k2, elt, n_h, n_b, sms)
    shared = w_bytes + block_b * reduction * elt + 4096
    if shared > budget:
        return None, (f"W_hh slice ({w_bytes // 1024} KB, K={reduction}) and operand tile need ~{shared // 1024} KB "
                      f"of shared memory per program, over the {budget // 1024} KB budget of sm_{arch}0")
    num_warps = 4 if w_bytes <= 32 * 1024 else 8
    # one reduction chunk per warp; every chunk ≥ 16 wide (K ≥ 64 with 4 warps, K2 ≥ 128 with 8)
    return PersistentConfig(block_b, block_h, block_k, num_warps, block_k2, split_k=num_warps), (
        f"{n_h * n_b} programs ({n_h} hidden slices × {n_b} batch tiles) ≤ {sms} SMs, "
        f"~{shared // 1024} KB shared memory each")


def _hip_on_chip(target: Target, w_bytes: int, block_b: int, block_h: int, block_k: int, block_k2: int, elt: int,
                 n_h: int, n_b: int, sms: int) -> tuple[PersistentConfig | None, str]:
    """The AMD half of :func:`persistent_config`: the W slice in VGPRs, the operand tile in LDS
    (HIP_W_SLICE_VGPRS), the same warps (split-K chunks) as on NVIDIA."""
    reduction = block_k + block_k2
    num_warps = 4 if w_bytes <= 32 * 1024 else 8
    vgprs = w_bytes // (num_warps * target.wave_size * 4)
    if vgprs > HIP_W_SLICE_VGPRS:
        return None, (f"W_hh slice ({w_bytes // 1024} KB, K={reduction}) needs {vgprs} VGPRs of each lane, over the "
                      f"{HIP_W_SLICE_VGPRS} the persistent kernel plans for it on {target.name}")
    lds = block_b * reduction * elt + 4096
    if lds > target.shared_budget:
        return None, (f"operand tile (BLOCK_B={block_b}, K={reduction}) needs ~{lds // 1024} KB of LDS per program, "
                      f"over the {target.shared_budget // 1024} KB of {target.name}")
    return PersistentConfig(block_b, block_h, block_k, num_warps, block_k2, split_k=num_warps), (
        f"{n_h * n_b} programs ({n_h} hidden slices × {n_b} batch tiles) ≤ {sms} CUs, "
        f"~{lds // 1024} KB LDS and {vgprs} VGPRs of W slice each")


def _precisions(dtype: torch.dtype, arch: int | str) -> tuple[str, ...]:
    """The dot precisions launches of ``dtype`` can pass on ``arch`` (dot_precision's range)."""
    target = get_target(arch) if isinstance(arch, str) else None
    if target is not None and target.is_hip:
        return ("tf32", "ieee") if dtype == torch.float32 and target.has_tf32 else ("ieee",)
    return ("tf32", "ieee") if dtype == torch.float32 else ("tf32",)


def compute_units(arch: int | str) -> int:
    """SMs / CUs of ``arch``'s table GPU (SM_COUNT for a CUDA major, targets.py for a name)."""
    return SM_COUNT[arch] if isinstance(arch, int) else get_target(arch).compute_units


def persistent_choices(arch: int | str, gates: int = 4) -> dict[tuple[PersistentConfig, torch.dtype], int]:
    """Every (PersistentConfig, dtype) that :func:`persistent_config` can return on ``arch`` (with
    its default SM count) for a cell of ``gates`` gate blocks, mapped to the largest grid
    (programs) it is launched with.

    Exact, not sampled: the config depends on B only through B ≤ 16 (one 16-row tile) or not
    (32-row tiles), and on H through its reduction tiles; B only adds batch tiles, up to
    SMs // hidden slices of them. No SM-count-dependent tile: on a GPU with other SM counts the
    launcher picks from this same set (or falls back to the step level)."""
    return {key: programs for key, (programs, _) in _persistent_reach(arch, gates).items()}


def persistent_precisions(arch: int | str, gates: int = 4) -> dict[tuple[PersistentConfig, torch.dtype], set]:
    """The dot precisions each (PersistentConfig, dtype) of :func:`persistent_choices` runs with
    ("tf32" for bf16/fp16; fp32: "tf32" and, where IEEE dots are allowed, "ieee"; on AMD targets
    "ieee", and fp32 "tf32" too on gfx942)."""
    return {key: precisions for key, (_, precisions) in _persistent_reach(arch, gates).items()}


def _persistent_reach(arch: int | str, gates: int) -> dict:
    sms = compute_units(arch)
    reach: dict = {}
    for dt in DTYPES:
        for precision in _precisions(dt, arch):
            for h in range(1, PERSISTENT_MAX_HIDDEN + 1):
                n_h = triton.cdiv(h, PERSISTENT_BLOCK_H)
                # the largest batch of each tile size that fits
                for b in (16, 16 * (sms // n_h), 32 * (sms // n_h)):
                    cfg, _ = persistent_config(b, h, dt, arch=arch, sms=sms, gates=gates, precision=precision)
                    if cfg is not None:
                        programs, precisions = reach.get((cfg, dt), (0, set()))
                        reach[(cfg, dt)] = (max(programs, n_h * triton.cdiv(b, cfg.block_b)), precisions | {precision})
    return reach


def reachable_persistent_configs(arch: int | str, gates: int = 4) -> list[tuple[PersistentConfig, torch.dtype]]:
    """Every (PersistentConfig, dtype) that :func:`persistent_config` can return on ``arch``."""
    return sorted(persistent_choices(arch, gates), key=lambda cd: (str(cd[1]), cd[0].reduction, cd[0].block_b,
                                                            cd[0].block_h))
