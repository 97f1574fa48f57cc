"""The GPU targets the launch rules and the compile report know, in one table.

A target is an NVIDIA compute capability (``sm_80``, ``sm_90``) or an AMD Instinct ISA (``gfx90a``,
``gfx942``, ``gfx950``) compiled through Triton's ROCm backend. Each row holds what the persistent
level's launch rule needs (launch_config.persistent_config) when no device is present, as for an
ahead-of-time build: the compute units a resident grid may occupy, the on-chip memory a program may
plan for, the wave size and the fp32 dot precision the fused RNNs of that vendor's torch use.

Sources: CUDA C Programming Guide, compute-capability tables (A100: 108 SMs, 163 KB shared memory
per block; H100/H200 SXM: 132 SMs, 227 KB); AMD Instinct data sheets and the CDNA ISA guides (MI250X:
220 CUs over two GCDs, each a device of 110; MI300X: 304 CUs; MI355X: 256 CUs; 64 KB LDS per
workgroup on CDNA2/CDNA3, 160 KB on CDNA4; wavefronts of 64). TF32 (``xf32`` MFMA) exists on CDNA3
only (Triton's ROCm backend allows ``input_precision="tf32"`` on gfx942 alone).

On a live AMD device the numbers come from ``torch.cuda.get_device_properties`` (:func:`hip_target`):
under a ROCm torch (``torch.version.hip`` set) ``gcnArchName`` names the ISA and
``multi_processor_count`` counts compute units. (A live NVIDIA device is read by
launch_config._device_limits, as before this table.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Target:
    """One GPU target.

    ``vendor``: ``"cuda"`` or ``"hip"`` (Triton's backend name). ``compute_units``: SMs / CUs a
    resident persistent grid may use (the table's GPU; a live device overrides it). ``shared_limit``:
    the most shared memory (LDS on AMD) one block / workgroup may use, bytes. ``shared_budget``:
    what the persistent launch rule plans per program (the limit less a margin). ``wave_size``:
    threads per warp / wavefront. ``has_tf32``: the matrix units take TF32 (xf32) inputs.
    ``gpu``: the GPU the defaults describe."""

    name: str
    vendor: str
    compute_units: int
    shared_limit: int
    shared_budget: int
    wave_size: int
    has_tf32: bool
    gpu: str

    @property
    def is_hip(self) -> bool:
        return self.vendor == "hip"

    @property
    def major(self) -> int | None:
        """CUDA compute-capability major (8, 9); None for an AMD target."""
        return int(self.name.removeprefix("sm_")) // 10 if self.vendor == "cuda" else None


KB = 1024
TARGETS = {t.name: t for t in (
    # NVIDIA: budgets as the launch rule has always used them (launch_config.SHARED_BUDGET).
    Target("sm_80", "cuda", 108, 163 * KB, 160 * KB, 32, True, "A100"),
    Target("sm_90", "cuda", 132, 227 * KB, 220 * KB, 32, True, "H100/H200"),
    # AMD Instinct: the budget is the LDS limit itself; the launch rule's LDS estimate is an upper
    # bound of what the compiled kernels use (see launch_config.persistent_config).
    Target("gfx90a", "hip", 110, 64 * KB, 64 * KB, 64, False, "MI250X (one GCD)"),
    Target("gfx942", "hip", 304, 64 * KB, 64 * KB, 64, True, "MI300X"),
    Target("gfx950", "hip", 256, 160 * KB, 160 * KB, 64, False, "MI355X"),
)}
AMD_TARGETS = tuple(name for name, t in TARGETS.items() if t.is_hip)
NVIDIA_TARGETS = tuple(name for name, t in TARGETS.items() if not t.is_hip)


def get_target(arch: int | str) -> Target:
    """The table's target for ``arch``: a CUDA compute-capability major (8, 9), or a name
    (``"sm_90"``, ``"gfx942"``; a ROCm ``gcnArchName`` such as ``"gfx942:sramecc+:xnack-"`` too).
    ValueError for an unknown one."""
    name = f"sm_{arch}0" if isinstance(arch, int) else str(arch).split(":")[0]
    if name not in TARGETS:
        raise ValueError(f"arch must be a CUDA major (8, 9) or one of {', '.join(TARGETS)}, got {arch!r}")
    return TARGETS[name]


def rocm_torch() -> bool:
    """Whether this torch is a ROCm build (its "cuda" devices are AMD GPUs, run through HIP)."""
    return bool(getattr(torch.version, "hip", None))


def hip_target(device) -> Target:
    """The target of a live AMD GPU ``device`` under a ROCm torch, with its own compute units.

    The ISA comes from ``gcnArchName`` (``"gfx942:sramecc+:xnack-"``): the table's row, or for an
    ISA the table lacks a row built from the device (no TF32). Compute units
    (``multi_processor_count``) and wave size (``warp_size``) come from the device; LDS per
    workgroup is the larger of ``shared_memory_per_block`` and the table's (ROCm releases differ
    in what they report for gfx950's 160 KB)."""
    props = torch.cuda.get_device_properties(device)
    name = str(getattr(props, "gcnArchName", "")).split(":")[0]
    lds = int(getattr(props, "shared_memory_per_block", 0) or 0)
    base = TARGETS.get(name) or Target(name or "gfx", "hip", props.multi_processor_count, lds or 64 * KB,
                                       lds or 64 * KB, 64, False, str(props.name))
    lds = max(lds, base.shared_limit)
    return replace(base, compute_units=int(props.multi_processor_count), shared_limit=lds, shared_budget=lds,
                   wave_size=int(getattr(props, "warp_size", 0) or base.wave_size))
