"""Compile the kernels the launchers run, ahead of time, for a GPU target, and report registers,
spills, shared memory and tensor-core (MMA) instructions, plus the useful fraction of the
multiply-adds the tiles compute at the d2l and large shapes (no GPU needed: ptxas and cuobjdump
ship in the triton wheel, and so do the ROCm backend's compiler and linker).

    python -m lstm_triton.layers.kernel_report --arch sm_90 [--scope all|representative|ci|rated] [--json]
    python -m lstm_triton.layers.kernel_report --arch gfx942 ...   # AMD Instinct: gfx90a, gfx942, gfx950

AMD targets (kernels/targets.py) compile through Triton's ROCm backend, each launch specialised as
a HIP launch (pointers within 2 GB get ``tt.pointer_range = 32``: buffer loads), with the HIP
launch rules (launch_config: MIOpen's IEEE fp32 dots, CUs for SMs). Their rows read the AMDGPU
metadata of the kernel's assembly (:func:`amdgcn_facts`): VGPRs, AGPRs, scratch (the private
segment: where spilled registers go), and LDS (Triton's ``shared``), and count its ``v_mfma``
instructions; ``resident`` says whether the persistent grid fits the CUs, one workgroup each.

Each row is a kernel a launch compiles: the launchers run on CPU tensors with their kernels
replaced by recorders (:func:`capture_launches`), and each recorded launch is compiled with the
signature, constants and divisibility attributes Triton's JIT derives from its arguments and the
launch's options (:func:`specialise`, :func:`compile_build`). A build spills when ptxas gives it a
stack frame or spill stores (``ptxas -v``; cuobjdump shows the frame as STACK, never as LOCAL).

Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled); the CLI and the
tests call it in a subprocess for that reason.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..kernels import lstm_cell, lstm_persistent, lstm_step
from ..kernels.cell_math import GATES, GRU, LSTM, RNN_RELU, RNN_TANH, SAVED
from ..kernels.launch_config import (
    HIP_COOPERATIVE_LAUNCH,
    MAX_SPINS,
    PERSISTENT_MAX_HIDDEN,
    PersistentConfig,
    _precisions,
    compute_units,
    dot_precision,
    persistent_choices,
    persistent_config,
    persistent_reduction_tiles,
    pointwise_config,
    reachable_pointwise_configs,
    reachable_step_configs,
    step_config,
)
from ..kernels.targets import TARGETS, get_target

KERNELS = {fn.__name__: fn for fn in (
    lstm_cell.cell_forward_kernel, lstm_cell.cell_backward_kernel,
    lstm_step.step_forward_kernel, lstm_step.step_backward_kernel,
    lstm_persistent.persistent_forward_kernel, lstm_persistent.persistent_backward_kernel,
    lstm_step.rescue_forward_kernel, lstm_step.rescue_backward_kernel,
)}
SHARED_LIMIT = {name: t.shared_limit for name, t in TARGETS.items()}  # max shared memory (LDS) per block
ARCHES = tuple(TARGETS)

TYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# The two shapes the report rates (B, H, dtype): the d2l char LM and the cuDNN comparison point;
# RATED adds the sequence lengths they run with (d2l: num_steps 35).
D2L = (32, 256, torch.float32)
LARGE = (16, 768, torch.bfloat16)
RATED = {"d2l_shape": (*D2L[:2], 35, D2L[2]), "large_shape": (*LARGE[:2], 1024, LARGE[2])}
# SASS opcodes of tensor-core matrix multiplies: HMMA (mma.sync, fp16/bf16/tf32), HGMMA (sm_90
# wgmma), IMMA/IGMMA (integer), DMMA (fp64), QGMMA (fp8).
MMA_OPCODE = re.compile(r"\b(?:HMMA|HGMMA|IMMA|IGMMA|DMMA|QGMMA)\.")
# Their PTX: each mma.sync / wgmma.mma_async instruction becomes one of the above.
PTX_MMA = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:mma\.sync|wgmma\.mma_async)\.", re.MULTILINE)
# AMD matrix-core instructions in the assembly (v_mfma_f32_16x16x4_f32, …_xf32, …_bf16, …_f16),
# and the AMDGPU metadata the report reads from it (amdhsa.kernels, one kernel per build).
AMDGCN_MFMA = re.compile(r"^\s*v_mfma_\w+", re.MULTILINE)
AMDGCN_FIELDS = {"vgprs": "vgpr_count", "agprs": "agpr_count", "scratch_bytes": "private_segment_fixed_size",
                 "vgpr_spills": "vgpr_spill_count", "sgpr_spills": "sgpr_spill_count"}


def _arch_key(arch: str) -> int | str:
    """What launch_config takes for ``arch``: a CUDA major (sm_90 -> 9) or the AMD target name."""
    return arch if get_target(arch).is_hip else get_target(arch).major


@dataclass
class KernelBuild:
    """One compiled kernel: a launcher configuration (``constexprs``, ``num_warps``, ``num_stages``)
    in one runtime specialisation (``signature``, ``specialised``, ``divisible``, ``options``: what
    Triton's JIT derives from the arguments of a real launch, see :func:`specialise`), for ``arch``.
    ``example`` is a (B, H, T) whose launch compiles exactly this build."""

    kernel: str
    level: str
    dtype: str
    constexprs: dict  # the launcher's constexpr arguments (its meta): the configuration
    num_warps: int
    arch: str
    num_stages: int = 3  # Triton's default; the persistent launchers pass 1
    signature: dict = field(default_factory=dict)  # argument -> Triton type ("constexpr" for specialised ones)
    specialised: dict = field(default_factory=dict)  # int arguments the JIT turned into constants (== 1)
    divisible: list = field(default_factory=list)  # arguments the JIT marked divisible by 16 (ints, pointers)
    options: dict = field(default_factory=dict)  # other compile options of the launch (launch_cooperative_grid)
    example: list = field(default_factory=list)  # [B, H, T] of a launch that compiles this build
    pointer_range: list = field(default_factory=list)  # AMD: pointers the JIT marked within 2 GB (buffer ops)
    registers: int = -1
    cp_async: int = -1  # cp.async instructions in the PTX (prefetches; must be 0 across a grid barrier)
    # ptxas -v: "N bytes stack frame, M bytes spill stores, K bytes spill loads". A build spills when
    # its stack frame or its spill stores are non-zero (spilled registers live in the stack frame;
    # cuobjdump reports the frame as STACK, LOCAL stays 0).
    spill_bytes: int = -1  # ptxas' spill stores (bytes per thread)
    spill_loads: int = -1  # ptxas' spill loads
    stack_bytes: int = -1  # the stack frame (ptxas; cuobjdump's STACK)
    local_bytes: int = -1  # cuobjdump's LOCAL (local-memory arrays; not where spills go)
    spills: bool = False  # stack_bytes > 0 or spill_bytes > 0
    shared_bytes: int = -1
    mma_instructions: int = -1  # tensor-core MMA instructions in the PTX (0: the dots run on the FMA units)
    # The same count in the SASS ptxas wrote: disassembled for the d2l/large rows only (-1 elsewhere;
    # ``--sass``: every row), where it shows ptxas kept every MMA the PTX asked for.
    sass_mma_instructions: int = -1
    d2l_shape: bool = False  # the build a launch at B=32, H=256, T=35, fp32 (default precision) compiles
    large_shape: bool = False  # the build a launch at B=16, H=768, T=1024, bf16 compiles
    # At the shape this row is picked for (d2l or large): real multiply-adds of the recurrent GEMM
    # (B·4H·H) over those the tiles compute, padding included; NaN for other rows and for the
    # cell level (its GEMM is torch's).
    useful_mac_fraction: float = math.nan
    max_programs: int = 0  # persistent: largest grid the launcher gives this config; 0 = no barrier
    grid_fits_sms: bool = True  # persistent: max_programs ≤ the architecture's SM count
    shared_fits: bool = True  # shared_bytes within what one block may use on this architecture
    # AMD targets (-1 elsewhere), from the AMDGPU metadata: architectural and accumulation VGPRs per
    # lane, scratch bytes per lane (private segment: spilled registers), the compiler's spill counts
    # (spills: scratch or VGPR spills; SGPR spills land in VGPR lanes, not memory).
    # shared_bytes is the LDS, mma_instructions the v_mfma count.
    vgprs: int = -1
    agprs: int = -1
    scratch_bytes: int = -1
    vgpr_spills: int = -1
    sgpr_spills: int = -1
    # Every program of the largest grid resident at once, one block (workgroup) per SM (CU): the
    # grid fits, and so do the block's shared memory and (AMD) its waves' registers on one CU.
    resident: bool = True


# ----------------------------------------------------------------------------- runtime specialisation


class _Stop(Exception):
    """Raised by a recorder to stop a launcher after its last launch of interest."""


class _Recorder:
    """Stands in for a @triton.jit kernel in a launcher module: ``kernel[grid](*args, **kwargs)``
    records the call; after ``limit`` calls it stops the launcher (what follows is torch work)."""

    def __init__(self, fn, sink: list, limit: int):
        self.fn, self.sink, self.limit = fn, sink, limit

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.sink.append((self.fn, args, kwargs))
            if len(self.sink) >= self.limit:
                raise _Stop
        return launch


def _precision_patch(major: int | str, precision: str | None):
    """The dot_precision a launch for ``major`` (CUDA major or AMD target name) computes, with
    ``precision`` overriding the fp32 one; None where the launchers' own (CUDA, no override) holds."""
    target = get_target(major) if isinstance(major, str) else None
    if precision is None and target is None:
        return None

    def patched(dt, *_args, **_kwargs):
        if precision is not None and dt == torch.float32:
            return precision
        return dot_precision(dt, target)
    return patched


def capture_launches(level: str, direction: str, cell: int, batch: int, hidden: int, steps: int,
                     dtype: torch.dtype, major: int | str, precision: str | None = None) -> list[tuple]:
    """The kernel launches (fn, args, kwargs) the launcher of ``level`` makes for one direction
    (``forward``/``backward``) of a (T=steps, B=batch, H=hidden) sequence of ``cell``, recorded by
    running the real launcher on CPU tensors with its kernels replaced by recorders. Fresh CPU
    allocations are 64-byte aligned like CUDA ones (512), so every pointer the launcher offsets
    (``xp[t]``, ``dG[T]``, the timeout flag behind the counters) has the alignment it has on a GPU.
    The persistent launcher's device query is answered for ``major`` (sm_80: 8, sm_90: 9; an AMD
    target by its name, ``"gfx942"``: then the launch is the HIP one, with the ROCm dot precision
    and the ROCm backend's cooperative flag); ``precision`` overrides the fp32 dot precision
    torch's settings give (``"ieee"``)."""
    module = {"cell": lstm_cell, "step": lstm_step, "persistent": lstm_persistent}[level]
    name = {"cell": "cell_", "step": "step_", "persistent": "persistent_"}[level] + direction + "_kernel"
    sink: list = []
    limit = 1 if level == "persistent" else steps
    saved = {name: getattr(module, name)}
    g, h, b, t = GATES[cell], hidden, batch, steps
    setattr(module, name, _Recorder(saved[name], sink, limit))
    if level == "persistent":
        saved["persistent_config"] = module.persistent_config

        def config(b_, h_, dt_, device=None, **kw):
            return saved["persistent_config"](b_, h_, dt_, arch=major, precision=precision, **kw)
        module.persistent_config = config
        if isinstance(major, str):
            saved["cooperative_launch"] = module.cooperative_launch
            module.cooperative_launch = lambda device: HIP_COOPERATIVE_LAUNCH
    patched = _precision_patch(major, precision)
    if patched is not None and hasattr(module, "dot_precision"):
        saved["dot_precision"] = module.dot_precision
        module.dot_precision = patched
    try:
        e = torch.empty  # the launchers only read shapes, dtypes and addresses here
        w = e(g * h, h, dtype=dtype)
        b_hh = None if cell == LSTM else e(g * h, dtype=dtype)
        forward = {"cell": lstm_cell._forward_loop, "step": lstm_step._forward_loop,
                   "persistent": lstm_persistent._forward}[level]
        backward = {"cell": lstm_cell._backward_loop, "step": lstm_step._backward_loop,
                    "persistent": lstm_persistent._backward}[level]
        with torch.no_grad():
            if direction == "forward":
                forward(e(t, b, g * h), e(b, h, dtype=dtype), e(b, h), w, b_hh, cell)
            else:  # as autograd calls it: dy in fp32, the forward's fp32 state and activations
                backward(e(t, b, h), e(b, h), w, e(t + 1, b, h), e(t, b, SAVED[cell] * h), cell)
    except _Stop:
        pass
    except ValueError as exc:  # the launcher refuses this shape (e.g. persistent under IEEE fp32 over K > 256)
        if "cannot run" not in str(exc):
            raise
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
    return sink


def capture_rescue_launch(direction: str, cell: int, batch: int, hidden: int, steps: int, dtype: torch.dtype,
                          precision: str | None = None, major: int | str = 9) -> list[tuple]:
    """The launch of the rescue kernel that follows every persistent launch (lstm_step.rescue_forward
    / rescue_backward), recorded as :func:`capture_launches` records the others (``major``: as
    there; only an AMD target changes the launch, through its dot precision)."""
    name = f"rescue_{direction}_kernel"
    sink: list = []
    saved = {name: getattr(lstm_step, name)}
    setattr(lstm_step, name, _Recorder(saved[name], sink, 1))
    patched = _precision_patch(major, precision)
    if patched is not None:
        saved["dot_precision"] = lstm_step.dot_precision
        lstm_step.dot_precision = patched
    g, h, b, t, e = GATES[cell], hidden, batch, steps, torch.empty
    flag, w = torch.zeros(1, dtype=torch.int32), e(g * h, h, dtype=dtype)
    try:
        with torch.no_grad():
            if direction == "forward":
                lstm_step.rescue_forward(flag, e(t, b, g * h), e(t + 1, b, h, dtype=dtype), w, e(t + 1, b, h),
                                         e(t, b, SAVED[cell] * h), None if cell == LSTM else e(g * h), cell)
            else:
                width = 2 * g * h if cell == GRU else g * h
                lstm_step.rescue_backward(flag, e(t, b, h), e(t, b, SAVED[cell] * h), e(t + 1, b, h),
                                          e(t + 1, b, width, dtype=dtype), w, e(b, h), e(b, h), cell)
    except _Stop:
        pass
    finally:
        for k, v in saved.items():
            setattr(lstm_step, k, v)
    return sink


# Shapes the rescue builds are recorded at: sizes that are multiples of 16 and sizes that are not
# (the two specialisations, which spill differently); its tiles are fixed (launch_config.rescue_config).
RESCUE_SHAPES = ((32, 256), (3, 40))


def rescue_builds(arch: str, representative: bool = False) -> list[KernelBuild]:
    """The rescue kernels' builds (``level`` "rescue"), forward and backward, at :data:`RESCUE_SHAPES`:
    every cell type, dtype and (fp32) precision, or with ``representative`` the LSTM and GRU (the
    most registers) in fp32 (default precision) and bf16 (fp16 has its code; RNN_RELU RNN_TANH's)."""
    cells = (LSTM, GRU) if representative else (LSTM, GRU, RNN_TANH, RNN_RELU)
    dtypes = (torch.float32, torch.bfloat16) if representative else tuple(TYPE)
    key = _arch_key(arch)
    builds = []
    for cell in cells:
        for dt in dtypes:
            for prec in _other_precisions(dt, key) if not representative else (None,):
                for b, h in RESCUE_SHAPES:
                    for direction in ("forward", "backward"):
                        for fn, args, kwargs in capture_rescue_launch(direction, cell, b, h, 5, dt, prec, key):
                            builds.append(_build_from_launch("rescue", fn, args, kwargs, arch, dt, [b, h, 5]))
    return builds


def _other_precisions(dtype: torch.dtype, key: int | str) -> tuple:
    """None (the default precision) and, for fp32, the other one a launch on ``key`` can get
    (CUDA: "ieee"; gfx942: "tf32"; gfx90a/gfx950 have IEEE fp32 only)."""
    if dtype != torch.float32:
        return (None,)
    default = _precision_patch(key, None)
    default = default(dtype) if default else dot_precision(dtype)
    return (None, *(p for p in _precisions(dtype, key) if p != default))


_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "launch_cooperative_grid")


def specialise(fn, args: tuple, kwargs: dict, backend=None) -> tuple[dict, dict, dict, dict]:
    """What Triton's JIT compiles for ``fn[grid](*args, **kwargs)``: (signature, constexprs by
    argument path, attrs by argument path, compile options), with Triton's own rule
    (``native_specialize_impl``, as ``JITFunction.run`` binds a launch in Triton 3.6 … 3.9): an int
    equal to 1 becomes the constant 1, an int divisible by 16 and a pointer aligned to 16 bytes get
    ``tt.divisibility = 16``, ``None`` is a constant; ``do_not_specialize`` arguments (T) get
    nothing; constexpr parameters take the launch's value or their default. ``backend``: the
    Triton backend class whose rule applies (default NVIDIA's; AMD's HIPBackend adds
    ``tt.pointer_range = 32`` to pointers of tensors within 2 GB)."""
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import native_specialize_impl

    backend = backend or CUDABackend

    options = {k: v for k, v in kwargs.items() if k in _OPTIONS}
    bound = dict(zip(fn.arg_names, args))
    bound.update({k: v for k, v in kwargs.items() if k not in _OPTIONS})
    sig, consts, attrs = {}, {}, {}
    for idx, p in enumerate(fn.params):
        value = bound[p.name] if p.name in bound else p.default
        if p.is_constexpr:
            sig[p.name] = "constexpr"
            consts[(idx,)] = value
            continue
        ty, spec = native_specialize_impl(backend, value, p.is_const, not p.do_not_specialize,
                                          not p.do_not_specialize_on_alignment)
        sig[p.name] = ty
        if ty == "constexpr":
            consts[(idx,)] = spec
        elif spec:
            attrs[(idx,)] = backend.parse_attr(spec)
    return sig, consts, attrs, options


def _build_from_launch(level: str, fn, args: tuple, kwargs: dict, arch: str, dtype: torch.dtype,
                       example: list) -> KernelBuild:
    backend = None
    if get_target(arch).is_hip:
        from triton.backends.amd.compiler import HIPBackend as backend
    sig, consts, attrs, options = specialise(fn, args, kwargs, backend)
    meta = {k: v for k, v in kwargs.items() if k not in _OPTIONS and k in sig and sig[k] == "constexpr"
            and not k.endswith("_ptr")}
    names = fn.arg_names
    specialised = {names[i]: v for (i,), v in consts.items() if not fn.params[i].is_constexpr and v is not None}
    divisible = sorted(names[i] for (i,), a in attrs.items() if ["tt.divisibility", 16] in a)
    ranged = sorted(names[i] for (i,), a in attrs.items() if ["tt.pointer_range", 32] in a)
    extra = {k: v for k, v in options.items() if k not in ("num_warps", "num_stages")}
    return KernelBuild(fn.__name__, level, TYPE[dtype], meta, options.get("num_warps", 4), arch,
                       num_stages=options.get("num_stages", 3), signature=sig, specialised=specialised,
                       divisible=divisible, options=extra, example=list(example), pointer_range=ranged)


def _variant_key(build: KernelBuild) -> tuple:
    return (build.kernel, json.dumps(build.constexprs, sort_keys=True), build.num_warps, build.num_stages,
            json.dumps(build.signature, sort_keys=True), json.dumps(build.specialised, sort_keys=True),
            tuple(build.divisible), json.dumps(build.options, sort_keys=True), tuple(build.pointer_range))


def _valuation_samples(lo: int, hi: int) -> list[int]:
    """Integers of [lo, hi] covering what the specialisation can tell apart: 1, and for each
    2-adic valuation 0, 1, 2, 3 and ≥ 4 (divisible by 16) the smallest such integer (small
    buffers: the launchers run on CPU tensors here). Pointers are offset by products of B, H, t
    and element sizes, so these valuations decide their 16-byte alignment as well."""
    out = {1} if lo <= 1 <= hi else set()
    for v in range(5):
        for n in range(max(lo, 2), hi + 1):
            if (n % 16 == 0) if v == 4 else (n % (1 << v) == 0 and n % (1 << (v + 1)) != 0):
                out.add(n)
                break
    return sorted(out)


# Sequence lengths whose (T-1, T) pairs take every 2-adic valuation 0 … 4 (the persistent
# backward launcher offsets dy, c_all and dG by T-1 and T steps); the per-step launchers are
# captured over 17 steps, t = 0 … 16.
BACKWARD_STEPS = (1, 2, 3, 4, 5, 8, 9, 16, 17)
LOOP_STEPS = 17


def _sample_shapes(level: str, cell: int, dtype: torch.dtype, major: int | str) -> dict:
    """config -> [(B, H)]: sample shapes of each configuration the launcher picks, covering every
    runtime specialisation it can compile (see :func:`_valuation_samples`)."""
    groups: dict = {}
    if level == "persistent":
        ranges: dict = {}
        for h in range(1, PERSISTENT_MAX_HIDDEN + 1):
            r = persistent_reduction_tiles(h)
            ranges[r] = (min(ranges.get(r, (h, h))[0], h), h)
        hs = sorted({h for lo, hi in ranges.values() for h in _valuation_samples(lo, hi)})
        # batch tiles of 16 and of 32 rows; 1 and 4 tiles of 32 (the timeout flag sits behind one
        # counter per tile: 16-byte aligned when the tiles are a multiple of 4)
        bs = _valuation_samples(1, 16) + _valuation_samples(17, 32) + _valuation_samples(97, 128)
        for h in hs:
            for b in bs:
                for prec in _precisions(dtype, major):  # IEEE: other tiles (NVIDIA)
                    cfg, _ = persistent_config(b, h, dtype, arch=major, gates=GATES[cell], precision=prec)
                    if cfg is not None and (b, h) not in groups.get(cfg, []):
                        groups.setdefault(cfg, []).append((b, h))
    elif level == "step":
        bs = sorted({b for lo, hi in ((1, 16), (17, 32), (33, 64), (65, 128)) for b in _valuation_samples(lo, hi)})
        for b in bs:
            for h in _valuation_samples(1, 64):
                groups.setdefault(step_config(b, h, dtype), []).append((b, h))
    else:  # the block depends on B·H only: B, H ≤ 32 reach every block (B·H > 512: the widest)
        for b in _valuation_samples(1, 16) + _valuation_samples(17, 32):
            for h in _valuation_samples(1, 16) + _valuation_samples(17, 32):
                groups.setdefault(pointwise_config(b * h), []).append((b, h))
    return groups


def _persistent_cfg(build: KernelBuild) -> PersistentConfig:
    c = build.constexprs
    return PersistentConfig(c["BLOCK_B"], c["BLOCK_H"], c["BLOCK_K"], build.num_warps, c["BLOCK_K2"], c["SPLIT"])


def _extreme_shapes(shapes: list) -> list:
    """Of a configuration's sample shapes: the most divisible one (B and H multiples of 16 where
    the configuration allows, 16 steps) and the least (odd B and H > 1, 3 steps): the variants
    with every and with no size and pointer aligned, where one exists."""
    def v(n):
        return min((n & -n).bit_length() - 1, 4)
    general = [(b, h) for b, h in shapes if b > 1 and h > 1] or shapes
    most = max(general, key=lambda bh: (v(bh[0]) + v(bh[1]), bh))
    least = min(general, key=lambda bh: (v(bh[0]) + v(bh[1]), bh))
    return [(*most, 16), (*least, 3)]


def launch_variants(level: str, cell: int, dtype: torch.dtype, arch: str, configs=None,
                    exhaustive: bool = True) -> dict:
    """config -> {variant key: KernelBuild}: every build the launchers of ``level`` compile for
    ``cell`` and ``dtype`` on ``arch`` (both directions, the default dot precision and, for fp32,
    IEEE too), over the sample shapes of :func:`_sample_shapes`; ``configs`` restricts it.
    Without ``exhaustive`` only the launches at each configuration's most and least divisible
    shape (:func:`_extreme_shapes`) are recorded: the representative set's quick path (recording
    every sample shape runs the launchers thousands of times)."""
    major = _arch_key(arch)
    out: dict = {}
    for cfg, shapes in _sample_shapes(level, cell, dtype, major).items():
        if configs is not None and cfg not in configs:
            continue
        variants = out.setdefault(cfg, {})
        runs = ([(b, h, None) for b, h in shapes] if exhaustive else _extreme_shapes(shapes))
        for b, h, t_fixed in runs:
            for direction in ("forward", "backward"):
                steps = ((BACKWARD_STEPS if direction == "backward" else (1,)) if level == "persistent"
                         else (LOOP_STEPS,))
                if t_fixed is not None:
                    steps = (t_fixed,)
                for t in steps:
                    for prec in _other_precisions(dtype, major) if level != "cell" else (None,):
                        for fn, args, kwargs in capture_launches(level, direction, cell, b, h, t, dtype, major, prec):
                            build = _build_from_launch(level, fn, args, kwargs, arch, dtype, [b, h, t])
                            if level == "persistent" and _persistent_cfg(build) != cfg:
                                continue  # IEEE picks other tiles: that config's own sample shapes cover it
                            variants.setdefault(_variant_key(build), build)
    return out


# ----------------------------------------------------------------------------- compiling and reading


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


PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict[str, int] | None:
    """stack frame, spill stores and spill loads (bytes per thread; the largest over the functions
    ptxas lists) from ``ptxas -v`` output, or None when it has no such line."""
    found = PTXAS_FRAME.findall(log)
    if not found:
        return None
    return {key: max(int(f[i]) for f in found) for i, key in enumerate(("stack", "spill_stores", "spill_loads"))}


def _ptxas_record(cubin: bytes) -> str:
    """Where the report keeps ptxas' numbers for a cubin (Triton's cache stores the cubin, not the
    log): beside Triton's cache, keyed by the cubin's hash."""
    import hashlib

    cache = getattr(getattr(triton, "knobs", None), "cache", None)
    root = getattr(cache, "dir", None) or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return os.path.join(root, "lstm_triton_ptxas", hashlib.sha256(cubin).hexdigest() + ".json")


def compile_with_ptxas_log(src, target, options: dict):
    """``triton.compile`` plus ptxas' own stack-frame and spill numbers (``ptxas -v``, which Triton
    runs on every cold compile and prints with ``knobs.nvidia.dump_ptxas_log``). On a Triton cache
    hit ptxas does not run: the numbers come from the report's record of that cubin, and without
    one the kernel is compiled once more with ``knobs.compilation.always_compile``."""
    import contextlib
    import io

    from triton import knobs

    def run(always: bool):
        out = io.StringIO()
        saved = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = True, always or saved[1]
        try:
            with contextlib.redirect_stdout(out):
                compiled = triton.compile(src, target=target, options=options)
        finally:
            knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = saved
        return compiled, parse_ptxas_log(out.getvalue())

    compiled, ptxas = run(False)
    record = _ptxas_record(compiled.asm["cubin"])
    if ptxas is None and os.path.exists(record):
        with open(record) as f:
            ptxas = json.load(f)
    if ptxas is None:
        compiled, ptxas = run(True)
        record = _ptxas_record(compiled.asm["cubin"])
    if ptxas is None:
        raise RuntimeError("ptxas printed no stack frame / spill line")
    os.makedirs(os.path.dirname(record), exist_ok=True)
    tmp = f"{record}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(ptxas, f)
    os.replace(tmp, record)
    return compiled, ptxas


def compile_build(build: KernelBuild, fn, sass: bool = False) -> KernelBuild:
    """Compile ``build`` of the @triton.jit ``fn`` for its architecture, exactly as its launch
    does (the signature, constants and 16-divisibility attributes Triton's JIT derives from the
    launch's arguments, the launch's options), and fill in what the report reads from ptxas, the
    PTX and the cubin; the SASS is disassembled for the d2l/large rows, or every row with ``sass``.
    AMD targets: compiled by the ROCm backend (wave 64), facts from the AMDGCN assembly
    (:func:`amdgcn_facts`)."""
    target = get_target(build.arch)
    names = fn.arg_names
    consts, attrs = {}, {}
    for idx, p in enumerate(fn.params):
        if build.signature[p.name] != "constexpr":
            attr = ([["tt.divisibility", 16]] if p.name in build.divisible else []) + (
                [["tt.pointer_range", 32]] if p.name in build.pointer_range else [])
            if attr:
                attrs[(idx,)] = attr
            continue
        if p.is_constexpr:
            consts[(idx,)] = build.constexprs.get(p.name, p.default)
        else:  # an int the JIT made a constant (1), or an argument left at None
            consts[(idx,)] = build.specialised.get(p.name)
    assert set(build.constexprs) <= set(names), build.constexprs
    src = ASTSource(fn, dict(build.signature), constexprs=consts, attrs=attrs)
    options = {"num_warps": build.num_warps, "num_stages": build.num_stages, **build.options}
    if target.is_hip:
        return _read_amdgcn(build, triton.compile(src, target=GPUTarget("hip", target.name, target.wave_size),
                                                  options=options), target)
    major = int(build.arch.removeprefix("sm_"))
    compiled, ptxas = compile_with_ptxas_log(src, GPUTarget("cuda", major, 32), options)
    build.cp_async = compiled.asm["ptx"].count("cp.async.")
    build.mma_instructions = count_ptx_mma(compiled.asm["ptx"])
    facts = cubin_facts(compiled.asm["cubin"], sass=sass or build.d2l_shape or build.large_shape)
    build.registers, build.local_bytes = facts["REG"], facts["LOCAL"]
    build.stack_bytes = max(facts["STACK"], ptxas["stack"])
    build.spill_bytes, build.spill_loads = ptxas["spill_stores"], ptxas["spill_loads"]
    build.spills = build.stack_bytes > 0 or build.spill_bytes > 0
    build.shared_bytes = max(int(compiled.metadata.shared), facts["SHARED"])
    build.shared_fits = build.shared_bytes <= SHARED_LIMIT[build.arch]
    build.sass_mma_instructions = facts.get("SASS_MMA", -1)
    build.resident = build.grid_fits_sms and build.shared_fits
    return build


def amdgcn_facts(asm: str) -> dict[str, int]:
    """vgprs, agprs, scratch_bytes, vgpr_spills, sgpr_spills of the one kernel in an AMDGCN
    assembly (its ``amdhsa.kernels`` metadata: ``.vgpr_count``, ``.agpr_count``,
    ``.private_segment_fixed_size`` — scratch per lane, where spilled registers live —,
    ``.vgpr_spill_count``, ``.sgpr_spill_count``), and ``mfma``, its ``v_mfma`` instructions
    (static count). ValueError when a field is missing (not an AMDGCN kernel)."""
    facts = {}
    for key, name in AMDGCN_FIELDS.items():
        found = re.findall(rf"^\s*(?:-\s+)?\.{name}:\s*(\d+)", asm, re.MULTILINE)
        if not found:
            raise ValueError(f"asm has no .{name} in its AMDGPU metadata")
        facts[key] = max(int(v) for v in found)
    facts["mfma"] = len(AMDGCN_MFMA.findall(asm))
    return facts


# A CU's 4 SIMDs have 512 registers per lane each (gfx90a and later: VGPRs and AGPRs from one file);
# a workgroup's waves spread over them, ceil(waves / 4) to a SIMD.
AMD_SIMDS_PER_CU, AMD_REGISTERS_PER_SIMD_LANE = 4, 512


def _read_amdgcn(build: KernelBuild, compiled, target) -> KernelBuild:
    facts = amdgcn_facts(compiled.asm["amdgcn"])
    for key in AMDGCN_FIELDS:
        setattr(build, key, facts[key])
    build.registers = facts["vgprs"] + facts["agprs"]
    build.mma_instructions = facts["mfma"]
    # VGPR spills go to scratch; SGPR spills go to lanes of a VGPR (v_writelane: no memory) and reach
    # scratch only through it, so they count where scratch does (gfx950's rescue kernels have a few).
    build.spills = build.scratch_bytes > 0 or build.vgpr_spills > 0
    build.shared_bytes = int(compiled.metadata.shared)  # LDS: Triton's allocation, passed at launch
    build.shared_fits = build.shared_bytes <= target.shared_limit
    waves_per_simd = -(-build.num_warps // AMD_SIMDS_PER_CU)
    registers_fit = build.registers * waves_per_simd <= AMD_REGISTERS_PER_SIMD_LANE
    build.resident = build.grid_fits_sms and build.shared_fits and registers_fit
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


def _shape_picks(major: int | str, gates: int) -> set:
    """The persistent configurations a cell of ``gates`` gate blocks runs at the d2l and large
    shapes, in every dtype (fp32, bf16, fp16)."""
    picks = set()
    for b, h, _ in (D2L, LARGE):
        for dt in TYPE:
            cfg = persistent_config(b, h, dt, arch=major, gates=gates)[0]
            if cfg is not None:
                picks.add((cfg, dt))
    return picks


def _resource_extremes(major: int | str, gates: int) -> set:
    """The persistent configurations that hold the most on chip, in fp32 and bf16: the largest W
    slice (BLOCK_K + BLOCK_K2) with the widest batch tile, once with a one-part and once with a
    two-part (BLOCK_K2 > 0) reduction — where shared memory and registers run out first. fp16 has
    bf16's sizes and code (another 16-bit type), so its extremes add no new limit."""
    choices = _choices(major, gates)
    extremes = set()
    for dt in (torch.float32, torch.bfloat16):
        for two_part in (False, True):
            pool = [(c, d) for c, d in choices if d == dt and (c.block_k2 > 0) == two_part]
            if pool:
                extremes.add(max(pool, key=lambda cd: (cd[0].block_k + cd[0].block_k2, cd[0].block_b)))
    return extremes


@functools.cache
def _choices(major: int | str, gates: int) -> dict:
    return persistent_choices(major, gates)


def representative_persistent(major: int | str, gates: int) -> set:
    """The persistent configurations the tests compile for a cell of ``gates`` gate blocks: what
    the d2l and large shapes pick, and the resource extremes."""
    return _shape_picks(major, gates) | _resource_extremes(major, gates)


def rated_builds(arch: str) -> list[KernelBuild]:
    """The builds a launch at the d2l shape (B=32, H=256, T=35, fp32, torch's default precision:
    TF32) and at the large shape (B=16, H=768, T=1024, bf16) compiles at the step and persistent
    levels, flagged ``d2l_shape``/``large_shape`` with their useful MAC fraction. T enters only
    through pointer offsets, so the launch is recorded at 16 + T % 16 steps (the same 2-adic
    valuations of T and T − 1 up to 16: the same alignments, without a 1024-step buffer)."""
    major = _arch_key(arch)
    out = {}
    for flag, (b, h, t, dt) in RATED.items():
        for level in ("step", "persistent"):
            for direction in ("forward", "backward"):
                for fn, args, kwargs in capture_launches(level, direction, LSTM, b, h, 16 + t % 16, dt, major):
                    build = _build_from_launch(level, fn, args, kwargs, arch, dt, [b, h, t])
                    build = out.setdefault(_variant_key(build), build)
                    setattr(build, flag, True)
                    build.useful_mac_fraction = useful_mac_fraction(build.kernel, build.constexprs, b, h)
    return list(out.values())


def _pick_variants(variants: dict, least: bool) -> list[KernelBuild]:
    """Of each (kernel, constexprs) of one configuration: the variant with the most arguments
    divisible by 16 (sizes that are multiples of 16: what most runs compile) and, with ``least``,
    also the one with the fewest (odd sizes: every pointer and size unaligned, no vector access)."""
    groups: dict = {}
    for build in variants.values():
        groups.setdefault((build.kernel, json.dumps(build.constexprs, sort_keys=True)), []).append(build)
    picked = []
    for builds in groups.values():
        general = [b for b in builds if not b.specialised] or builds
        picked.append(max(general, key=lambda b: len(b.divisible)))
        if least:
            picked.append(min(general, key=lambda b: len(b.divisible)))
    return picked


SCOPES = ("all", "representative", "ci", "rated")


def _ci_configs(level: str, cell: int, dt: torch.dtype, major: int | str):
    """The ``ci`` scope's configurations of ``level`` for ``cell`` and ``dt`` (None: none): where
    registers and shared memory run out first — the persistent configurations that hold the most on
    chip (:func:`_resource_extremes`) for the LSTM and the GRU (4 and 3 gate blocks; the plain RNN's
    one-gate kernels hold less), and the LSTM's widest step tile (the GRU's holds three gate blocks
    of the same tile), in fp32 and bf16 (fp16 has bf16's sizes and code). No cell-level build: its
    pointwise kernels hold a few values a thread and no dot (the representative set has them)."""
    if dt == torch.float16 or cell not in (LSTM, GRU) or level == "cell" or (level == "step" and cell != LSTM):
        return None
    if level == "step":
        return {max((c for c, d in reachable_step_configs() if d == dt), key=lambda c: c.block_b * c.block_h)}
    return {c for c, d in _resource_extremes(major, GATES[cell]) if d == dt}


def planned_builds(arch: str, scope: str = "all") -> list[KernelBuild]:
    """The builds of ``scope`` (:data:`SCOPES`) on ``arch``.

    ``all`` (``lstm-triton kernels``, ``LSTM_TRITON_AOT=all``): every build the launchers can
    compile — each configuration they pick (:func:`launch_variants`), in each runtime
    specialisation a launch of it can get. Triton specialises the int sizes (== 1, divisible by
    16) and the pointers (16-byte aligned) of every launch, so a configuration serving sizes that
    are and are not multiples of 16 is compiled (and runs) as several kernels: ~5,500 builds for
    sm_90, hours of compiling.

    ``representative`` (``LSTM_TRITON_AOT=representative``): every step configuration of the LSTM
    and the other cell types' largest step tile per dtype, the cell level's widest block, and per
    cell type the persistent configurations the d2l and large shapes pick plus those that hold the
    most on chip (:func:`representative_persistent`) — each in its most-aligned variant (sizes
    multiples of 16, the common case), and the persistent ones also in their least-aligned variant
    (odd sizes: no vector loads, the most address registers), since the two spill differently;
    plus the rescue kernels of the LSTM and GRU. ~230 builds per architecture (~8 min cold on 2
    cores).

    ``ci`` (``make test`` for sm_90, to keep a cold Triton cache within CI's budget):
    :func:`_ci_configs`, in the most-aligned variant, and the LSTM's rescue kernels: the builds
    that spill first if a tile or a kernel grows. ~40 builds (~1 CPU-minute cold).

    Every scope includes the exact builds of the d2l and large launches (:func:`rated_builds`);
    ``rated`` (``--rated``, ``LSTM_TRITON_AOT=rated``, ``make test`` for sm_80 and on Triton 3.6)
    is only those."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    major = _arch_key(arch)
    plans = {_variant_key(b): b for b in rated_builds(arch)}
    sampled = scope in ("representative", "ci")
    for level in () if scope == "rated" else ("cell", "step", "persistent"):
        for cell in (LSTM, GRU, RNN_TANH, RNN_RELU):
            for dt in TYPE:
                configs = None
                if scope == "ci":
                    configs = _ci_configs(level, cell, dt, major)
                    if configs is None:
                        continue
                elif scope == "representative":
                    if level == "cell":
                        configs = set(reachable_pointwise_configs()[-1:])
                    elif level == "step":
                        steps = [c for c, d in reachable_step_configs() if d == dt]
                        configs = set(steps) if cell == LSTM else {max(steps, key=lambda c: c.block_b * c.block_h)}
                    else:
                        configs = {c for c, d in representative_persistent(major, GATES[cell]) if d == dt}
                for variants in launch_variants(level, cell, dt, arch, configs, exhaustive=not sampled).values():
                    chosen = (_pick_variants(variants, least=level == "persistent" and scope != "ci") if sampled
                              else list(variants.values()))
                    for build in chosen:
                        plans.setdefault(_variant_key(build), build)
    if scope != "rated":
        for build in rescue_builds(arch, representative=sampled):
            if scope != "ci" or build.constexprs.get("CELL", LSTM) == LSTM:
                plans.setdefault(_variant_key(build), build)
    for build in plans.values():  # the largest grid the launcher gives each persistent build's config
        if build.level == "persistent":
            gates = GATES[build.constexprs.get("CELL", LSTM)]
            programs = _choices(major, gates)[(_persistent_cfg(build), {v: k for k, v in TYPE.items()}[build.dtype])]
            build.max_programs, build.grid_fits_sms = programs, programs <= compute_units(major)
    return list(plans.values())


def _compile_one(build: KernelBuild, sass: bool = False) -> KernelBuild:
    return compile_build(build, KERNELS[build.kernel], sass)


def build_all(arch: str = "sm_90", workers: int | None = None, scope: str = "all", sass: bool = False,
              levels=None, cells=None) -> list[KernelBuild]:
    """Compile the builds of ``scope`` (:func:`planned_builds`), in parallel processes (each compile
    is single-threaded). ``sass``: count the SASS MMAs of every build, not only of the d2l/large
    ones; ``levels``/``cells``: only those levels / cell types (cell_math ids)."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    plans = planned_builds(arch, scope)
    if levels:
        plans = [b for b in plans if b.level in levels]
    if cells is not None:
        plans = [b for b in plans if b.constexprs.get("CELL", LSTM) in cells]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(partial(_compile_one, sass=sass), plans))


def format_table(builds: list[KernelBuild]) -> str:
    import pandas as pd

    df = pd.DataFrame([asdict(b) for b in builds])
    df["constexprs"] = df["constexprs"].map(lambda d: " ".join(f"{k}={v}" for k, v in d.items()))
    df["shape"] = ["d2l" if d else "large" if g else "" for d, g in zip(df["d2l_shape"], df["large_shape"])]
    df["constexprs"] = df["constexprs"].str.replace(f" MAX_SPINS={MAX_SPINS}", "").str.replace(" BLOCK_K2=0", "")
    df["variant"] = [" ".join([f"{k}={v}" for k, v in sp.items()] + [f"/16:{','.join(d) or '-'}"])
                     for sp, d in zip(df["specialised"], df["divisible"])]
    cols = ["kernel", "level", "dtype", "constexprs", "num_warps", "variant", "registers", "stack_bytes",
            "spill_bytes", "spills", "shared_bytes",
            "shared_fits", "mma_instructions", "sass_mma_instructions", "max_programs", "grid_fits_sms", "shape",
            "useful_mac_fraction"]
    if builds and get_target(builds[0].arch).is_hip:  # the AMDGCN columns in place of ptxas/SASS ones
        df = df.rename(columns={"shared_bytes": "lds_bytes", "mma_instructions": "mfma_instructions"})
        cols = ["kernel", "level", "dtype", "constexprs", "num_warps", "variant", "vgprs", "agprs", "scratch_bytes",
                "spills", "lds_bytes", "shared_fits", "mfma_instructions", "max_programs", "resident", "shape",
                "useful_mac_fraction"]
    return df[cols].to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lstm-triton kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", choices=ARCHES,
                        help="NVIDIA compute capability or AMD Instinct ISA (gfx90a MI250X, gfx942 MI300X, "
                             "gfx950 MI355X; kernels/targets.py)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--scope", default="all", choices=SCOPES,
                        help="which builds (planned_builds): all of them (hours), the representative set, "
                             "make test's ci set, or only the d2l and large shapes' (rated)")
    parser.add_argument("--representative", dest="scope", action="store_const", const="representative",
                        help="= --scope representative")
    parser.add_argument("--rated", dest="scope", action="store_const", const="rated",
                        help="= --scope rated (the GPU check's SASS rows)")
    parser.add_argument("--level", action="append", choices=("cell", "step", "persistent"),
                        help="only this level (repeatable)")
    parser.add_argument("--cell", action="append", choices=("lstm", "gru", "rnn_tanh", "rnn_relu"),
                        help="only this cell type (repeatable)")
    parser.add_argument("--sass", action="store_true",
                        help="disassemble every build to count its SASS MMAs (default: the d2l/large rows)")
    args = parser.parse_args(argv)
    if args.sass and get_target(args.arch).is_hip:
        parser.error(f"--sass disassembles NVIDIA builds; {args.arch}'s rows count v_mfma from the AMDGCN already")
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        print("lstm-triton kernels: error: unset TRITON_INTERPRET to compile for a GPU", file=sys.stderr)
        return 2
    cells = None if not args.cell else {
        {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN_TANH, "rnn_relu": RNN_RELU}[c] for c in args.cell}
    builds = build_all(args.arch, scope=args.scope, sass=args.sass, levels=args.level, cells=cells)
    print(json.dumps([asdict(b) for b in builds]) if args.json else format_table(builds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
