"""The launch rules on AMD Instinct GPUs (Triton's ROCm backend), without one: what the d2l and
large shapes pick on each target of kernels/targets.py, and the decisions a ROCm torch's device
gets — its properties faked (torch.version.hip, gcnArchName, CU count), as a HIP device shows them."""

import contextlib
from types import SimpleNamespace

import pytest
import torch

from lstm_triton.kernels import device as device_guard
from lstm_triton.kernels import launch_config as lc
from lstm_triton.kernels import lstm_persistent, lstm_step
from lstm_triton.kernels.targets import AMD_TARGETS, TARGETS, get_target
from lstm_triton.layers.backend import choose_backend, choose_fusion

from .precision_flags import fp32_precision

D2L, LARGE = (32, 256, torch.float32), (16, 768, torch.bfloat16)
# One CU count per device a ROCm torch reports as multi_processor_count.
MI300X = dict(gcnArchName="gfx942:sramecc+:xnack-", multi_processor_count=304, name="AMD Instinct MI300X")
MI355X = dict(gcnArchName="gfx950:sramecc+:xnack-", multi_processor_count=256, name="AMD Instinct MI355X")
MI250X = dict(gcnArchName="gfx90a:sramecc+:xnack-", multi_processor_count=110, name="AMD Instinct MI250X")


@pytest.fixture
def hip_device(monkeypatch):
    """Make this (CPU) torch look like a ROCm build with one AMD GPU of the given properties;
    returns a function that installs them (and can be called again for another GPU)."""
    def install(cooperative: bool = True, **props):
        fields = dict(warp_size=64, shared_memory_per_block=64 * 1024, major=9, minor=4, **props)
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # a GPU launch: the launch rules' GPU path
        monkeypatch.setattr(torch.version, "hip", "7.0.0", raising=False)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(**fields))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(lc, "_hip_device_cooperates", lambda index: cooperative)
        monkeypatch.setattr(device_guard, "_device_context", lambda device: contextlib.nullcontext())
        lc._hip_target_of.cache_clear()
    yield install
    lc._hip_target_of.cache_clear()


@pytest.mark.parametrize("arch", AMD_TARGETS)
def test_d2l_and_large_shapes_run_persistent_on_every_amd_target(arch):
    """d2l (B=32, H=256, fp32): one unpadded 32-row tile, 16 programs; large (B=16, H=768, bf16):
    K = 512 + 256, 48 programs; both far within every target's CUs, LDS and VGPRs."""
    cfg, reason = lc.persistent_config(*D2L, arch=arch)
    assert (cfg.block_b, cfg.reduction, cfg.num_warps) == (32, 256, 8), reason
    assert lc.persistent_grid(32, 256, cfg) == (16, 1) and "CUs" in reason and "LDS" in reason
    cfg, reason = lc.persistent_config(*LARGE, arch=arch)
    assert (cfg.block_b, cfg.block_k, cfg.block_k2) == (16, 512, 256), reason
    assert lc.persistent_grid(16, 768, cfg) == (48, 1)


def test_amd_and_nvidia_targets_pick_the_same_tiles_for_the_rated_shapes():
    """One set of tiles for both vendors at the d2l and large shapes (the AMD rule differs in the
    on-chip check and the fp32 precision, not in the tiles these shapes get)."""
    for shape in (D2L, LARGE):
        picks = {lc.persistent_config(*shape, arch=a)[0] for a in TARGETS}
        assert len(picks) == 1, picks


def test_fp32_dots_follow_miopen_ieee_and_16_bit_dots_the_rocm_default():
    """MIOpen's RNNs have no TF32: fp32 is IEEE whatever torch's switches say; with MIOpen off
    nn.LSTM's GEMMs follow the matmul switch, which reaches xf32 on gfx942 only. bf16/fp16 take
    "ieee" (the ROCm backend refuses "tf32" except on gfx942); the NVIDIA rule is unchanged."""
    with fp32_precision("tf32"):
        for arch in AMD_TARGETS:
            assert [lc.dot_precision(dt, get_target(arch)) for dt in lc.DTYPES] == ["ieee"] * 3
        assert lc.dot_precision(torch.float32, get_target("sm_90")) == "tf32"
    with fp32_precision(cudnn_enabled=False):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        assert lc.dot_precision(torch.float32, get_target("gfx942")) == "tf32"
        assert lc.dot_precision(torch.float32, get_target("gfx950")) == "ieee"
        assert lc.dot_precision(torch.bfloat16, get_target("gfx942")) == "ieee"


@pytest.mark.parametrize("props, cus", [(MI300X, 304), (MI355X, 256), (MI250X, 110)])
def test_a_rocm_device_is_read_from_its_properties(hip_device, props, cus):
    """Under a ROCm torch a "cuda" device is an AMD GPU: its ISA from gcnArchName, its CUs from
    multi_processor_count, MIOpen's precision; auto picks Triton's persistent level for it."""
    hip_device(**props)
    target = lc.launch_target(torch.device("cuda:0"))
    assert (target.name, target.compute_units, target.wave_size) == (props["gcnArchName"][:6], cus, 64)
    cfg, reason = lc.persistent_config(*D2L, torch.device("cuda:0"))
    assert cfg == lc.persistent_config(*D2L, arch=target.name)[0] and f"≤ {cus} CUs" in reason
    assert choose_backend("auto", torch.device("cuda:0"), torch.float32) == "triton"
    assert choose_backend("auto", torch.device("cuda:0"), torch.float64) == "torch"
    assert choose_fusion("auto", *D2L[:2], torch.float32, torch.device("cuda:0")) == "persistent"


def test_a_partitioned_mi300x_sizes_the_grid_by_its_own_cus(hip_device):
    """An MI300X in CPX mode shows 38 CUs: the grid rule counts the device's CUs, not the table's
    304, and a grid over them runs at the step level (with the reason in the log)."""
    hip_device(**{**MI300X, "multi_processor_count": 38})
    cfg, reason = lc.persistent_config(16, 768, torch.bfloat16, torch.device("cuda:0"))
    assert cfg is None and "48 programs" in reason and "38 CUs" in reason
    assert choose_fusion("auto", 16, 768, torch.bfloat16, torch.device("cuda:0")) == "step"
    assert lc.persistent_config(*D2L, torch.device("cuda:0"))[0] is not None  # 16 programs


@pytest.mark.parametrize("cooperative", [True, False])
def test_launchers_pass_the_hip_precision_and_cooperate_where_the_device_can(hip_device, cooperative):
    """What the persistent and step launchers pass to the kernels on an MI300X: IEEE dots (MIOpen),
    the launch_cooperative_grid option only where the device supports cooperative launches
    (else the resident-grid rule and the barrier's recoverable timeout hold the grid)."""
    hip_device(cooperative=cooperative, **MI300X)
    grid, meta = lstm_persistent._launch_meta(32, 256, torch.float32, torch.device("cuda:0"))
    assert grid == (16, 1) and meta["PRECISION"] == "ieee" and meta["BLOCK_B"] == 32
    assert meta.get("launch_cooperative_grid", False) == (cooperative and lc.HIP_COOPERATIVE_LAUNCH)
    with device_guard.on_device(torch.device("cuda:0")):
        _, step_meta = lstm_step._grid_and_meta(16, 768, torch.bfloat16)
    assert step_meta["PRECISION"] == "ieee"
    _, step_meta = lstm_step._grid_and_meta(16, 768, torch.bfloat16)  # outside a guard: no device, NVIDIA's
    assert step_meta["PRECISION"] == "tf32"


def test_hip_on_chip_rule_keeps_the_w_slice_in_vgprs_and_the_operand_in_lds():
    """The ROCm backend keeps the W slice in VGPRs (≤ 64 a lane planned) and the operand tile in
    LDS (64 KB on gfx90a/gfx942, 160 KB on gfx950): fp32 K = 768 (192 KB of W) goes to the step
    level on gfx942; the plain RNN's fp32 K = 1024 (one gate: 64 KB of W) holds its 64 KB operand
    tile on gfx950 only."""
    cfg, reason = lc.persistent_config(16, 768, torch.float32, arch="gfx942", precision="tf32")
    assert cfg is None and "96 VGPRs" in reason
    cfg, reason = lc.persistent_config(16, 1024, torch.float32, arch="gfx90a", gates=1)
    assert cfg is None and "LDS" in reason and "64 KB" in reason
    assert lc.persistent_config(16, 1024, torch.float32, arch="gfx950", gates=1)[0] is not None
    assert lc.persistent_config(16, 1024, torch.bfloat16, arch="gfx90a")[0] is not None  # 64 VGPRs: the cap


@pytest.mark.parametrize("arch", AMD_TARGETS)
def test_every_hip_choice_is_enumerated_and_resident(arch):
    """Sampled (B, H, dtype, CUs): the launcher picks only enumerated configurations (the compile
    report builds them) and never a grid over the CUs; each is enumerated with the precisions its
    launches can pass (IEEE; gfx942's fp32 xf32 too, for nn.LSTM with MIOpen off)."""
    choices = lc.persistent_choices(arch)
    fp32_precisions = {"ieee", "tf32"} if arch == "gfx942" else {"ieee"}
    for (cfg, dt), precisions in lc.persistent_precisions(arch).items():
        assert precisions == (fp32_precisions if dt == torch.float32 else {"ieee"}), (cfg, dt, precisions)
    gen = torch.Generator().manual_seed(7)
    for _ in range(400):
        B = int(torch.randint(1, 5000, (), generator=gen))
        H = int(torch.randint(1, lc.PERSISTENT_MAX_HIDDEN + 1, (), generator=gen))
        dt = lc.DTYPES[int(torch.randint(0, 3, (), generator=gen))]
        cus = get_target(arch).compute_units - int(torch.randint(0, 80, (), generator=gen))
        cfg, _ = lc.persistent_config(B, H, dt, arch=arch, sms=cus)
        if cfg is not None:
            n_h, n_b = lc.persistent_grid(B, H, cfg)
            assert (cfg, dt) in choices and n_h * n_b <= cus, (B, H, dt, cus, cfg)


def test_a_hip_refusal_of_a_cooperative_grid_is_recognised():
    """Triton's HIP launcher reports hipErrorCooperativeLaunchTooLarge through hipGetErrorString:
    the persistent level then falls back to the step level, as on CUDA."""
    for text in ("Triton Error [HIP]:  Code: 720, Messsage: hipErrorCooperativeLaunchTooLarge",
                 "Triton Error [HIP]:  Code: 720, Messsage: cooperative launch too large",
                 "Triton Error [CUDA]: too many blocks in cooperative launch"):
        assert lstm_persistent._is_cooperative_refusal(RuntimeError(text)), text
    assert not lstm_persistent._is_cooperative_refusal(RuntimeError("Triton Error [HIP]: hipErrorOutOfMemory"))


def test_unknown_arch_is_a_value_error():
    with pytest.raises(ValueError, match="arch must be"):
        get_target("gfx1100")
