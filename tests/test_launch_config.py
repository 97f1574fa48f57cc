"""The persistent level's launch choices: tiles matched to (B, H), the 2-D grid, the reduction
pieces, and that every choice the launcher can make is in the enumerated (AOT-compiled) set."""

import pytest
import torch
import triton

from lstm_triton.kernels.launch_config import (
    DTYPES,
    PERSISTENT_MAX_HIDDEN,
    SM_COUNT,
    persistent_choices,
    persistent_config,
    persistent_grid,
    persistent_reduction_tiles,
    set_interpreter_concurrent_programs,
    use_gpu_tiles,
)

from .helpers import DEVICE


def test_d2l_shape_runs_an_unpadded_32_row_tile_on_sm90():
    cfg, reason = persistent_config(32, 256, torch.float32, arch=9)
    assert cfg is not None, reason
    assert cfg.block_b == 32 and cfg.reduction == 256
    assert persistent_grid(32, 256, cfg) == (16, 1)


@pytest.mark.parametrize("B,tile,tiles", [(1, 16, 1), (16, 16, 1), (17, 32, 1), (32, 32, 1), (33, 32, 2),
                                          (64, 32, 2), (70, 32, 3), (256, 32, 8)])
def test_batch_tile_matches_b_and_larger_batches_split_across_programs(B, tile, tiles):
    cfg, reason = persistent_config(B, 256, torch.float32, arch=9)
    assert cfg is not None, reason
    assert (cfg.block_b, persistent_grid(B, 256, cfg)[1]) == (tile, tiles)
    assert B / (tiles * tile) > 0.5 or B <= 8  # at most half a tile of padding rows beyond tiny B


def test_batch_beyond_the_sms_falls_back_with_a_reason():
    cfg, reason = persistent_config(32 * 9, 256, torch.float32, arch=9)  # 16 slices × 9 tiles = 144 > 132
    assert cfg is None and "144 programs" in reason and "132 SMs" in reason


@pytest.mark.parametrize("H,pieces", [(1, (64, 0)), (64, (64, 0)), (65, (128, 0)), (256, (256, 0)),
                                      (300, (256, 128)), (384, (256, 128)), (385, (512, 0)), (768, (512, 256)),
                                      (769, (1024, 0)), (1024, (1024, 0))])
def test_reduction_pieces(H, pieces):
    assert persistent_reduction_tiles(H) == pieces


def test_h768_reduction_is_not_padded_to_1024():
    cfg, reason = persistent_config(16, 768, torch.bfloat16, arch=9)
    assert cfg is not None, reason
    assert cfg.reduction == 768 and cfg.block_b == 16


def test_reduction_pieces_cover_every_h_with_powers_of_two_and_little_padding():
    for H in range(1, PERSISTENT_MAX_HIDDEN + 1):
        k, k2 = persistent_reduction_tiles(H)
        assert k + k2 >= H and k >= 64 and k & (k - 1) == 0 and (k2 == 0 or (k2 & (k2 - 1) == 0 and k2 <= k // 2))
        # below 257 a single piece (up to half padding: each extra size is another compiled set)
        assert H > (k + k2) * 2 / 3 or H <= 256, f"H={H}: K={k}+{k2} wastes a third or more"


@pytest.mark.parametrize("gates", [4, 3, 1], ids=["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("arch", [8, 9])
def test_every_enumerated_config_has_legal_dot_tiles(arch, gates):
    for cfg, dt in persistent_choices(arch, gates):
        dims = [cfg.block_b, cfg.block_h, cfg.block_k // cfg.split_k] + (
            [cfg.block_k2 // cfg.split_k] if cfg.block_k2 else [])
        assert all(d >= 16 and d & (d - 1) == 0 for d in dims), (cfg, dt)
        assert cfg.split_k == cfg.num_warps  # one reduction chunk per warp


@pytest.mark.parametrize("gates", [4, 3, 1], ids=["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("arch", [8, 9])
def test_every_choice_is_in_the_enumerated_set_and_fits_the_sms(arch, gates):
    """Sampled (B, H, dtype) and smaller SM counts: the launcher only picks enumerated configs,
    and never a grid larger than the SM count (the barrier needs all programs resident)."""
    choices = persistent_choices(arch, gates)
    gen = torch.Generator().manual_seed(arch)
    for _ in range(3000 if gates == 4 else 1000):
        B = int(torch.randint(1, 4500, (), generator=gen))
        H = int(torch.randint(1, PERSISTENT_MAX_HIDDEN + 1, (), generator=gen))
        dt = DTYPES[int(torch.randint(0, 3, (), generator=gen))]
        sms = SM_COUNT[arch] - int(torch.randint(0, 80, (), generator=gen))
        cfg, reason = persistent_config(B, H, dt, arch=arch, sms=sms, gates=gates)
        if cfg is not None:
            n_h, n_b = persistent_grid(B, H, cfg)
            assert (cfg, dt) in choices and n_h * n_b <= sms, (B, H, dt, sms, cfg)
            assert n_h * n_b <= choices[(cfg, dt)] or sms != SM_COUNT[arch]


@pytest.mark.parametrize("cell, fusion", [("LSTM", "step"), ("GRU", "step"), ("RNN_TANH", "persistent"),
                                         ("RNN_RELU", "persistent")])
def test_the_gate_count_sizes_the_w_slice_and_auto_follows_it(cell, fusion, caplog):
    """B=32, H=1024, fp32 on sm_90: the LSTM's 4 gate blocks (256 KB) and GRU's 3 (192 KB) do not
    fit one block's shared memory next to the operand tile, the plain RNN's one (64 KB) does (in 16-row
    tiles: a 4 KB row of the operand is too wide for 32, so 2 tiles, 128 programs); auto
    picks persistent under the same rule for every cell type, else step, and logs why."""
    import logging

    from lstm_triton.layers.backend import choose_fusion

    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        assert choose_fusion("auto", 32, 1024, torch.float32, torch.device("cuda"), arch=9, cell=cell) == fusion
    if fusion == "step":
        assert f"fusion auto -> step: {cell} B=32 H=1024" in caplog.text and "of shared memory" in caplog.text
    else:
        assert f"fusion auto -> persistent: {cell} B=32 H=1024" in caplog.text and "128 programs" in caplog.text


def test_fewer_gates_keep_a_smaller_slice_with_the_same_grid():
    cfgs = {g: persistent_config(32, 256, torch.float32, arch=9, gates=g)[0] for g in (4, 3, 1)}
    assert {persistent_grid(32, 256, c) for c in cfgs.values()} == {(16, 1)}
    assert {(c.block_b, c.block_h, c.reduction) for c in cfgs.values()} == {(32, 16, 256)}
    # W slice 64 KB (LSTM), 48 KB (GRU): 8 warps; 16 KB (RNN): 4 warps, each reduction chunk still ≥ 16 wide
    assert [cfgs[g].num_warps for g in (4, 3, 1)] == [8, 8, 4]


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter tiles")
@pytest.mark.parametrize("B,H", [(1, 1), (64, 1024), (37, 300)])
def test_interpreter_tiles_run_one_program(B, H):
    cfg, reason = persistent_config(B, H, torch.float32, torch.device("cpu"))
    assert cfg is not None, reason
    assert persistent_grid(B, H, cfg) == (1, 1)


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter tiles")
def test_interpreter_tiles_refuse_more_rows_than_one_tile():
    cfg, reason = persistent_config(65, 16, torch.float32, torch.device("cpu"))
    assert cfg is None and "B=65 > 64" in reason


@pytest.mark.skipif(DEVICE != "cpu", reason="interpreter switches")
@pytest.mark.parametrize("B,H", [(32, 256), (70, 16), (16, 768)])
def test_concurrent_harness_gets_the_exact_sm90_grid(B, H):
    use_gpu_tiles(True)
    set_interpreter_concurrent_programs(True)
    try:
        cfg, _ = persistent_config(B, H, torch.float32, torch.device("cpu"))
    finally:
        set_interpreter_concurrent_programs(False)
        use_gpu_tiles(False)
    expected, _ = persistent_config(B, H, torch.float32, arch=9)
    assert cfg == expected
    if cfg is not None:
        assert persistent_grid(B, H, cfg) == (triton.cdiv(H, 16), triton.cdiv(B, cfg.block_b))


def test_configurations_whose_builds_spill_are_not_picked(caplog):
    """The AOT report (ptxas' stack frame / spill stores) found these persistent builds spilling:
    32-row tiles over rows wider than 1.5 KB, H > 128 not a multiple of 16 (no vector loads of h),
    IEEE fp32 dots over K > 256. The launcher picks 16-row tiles or routes the shape to the step
    level, and auto says why."""
    import logging

    from lstm_triton.layers.backend import choose_fusion

    cfg, _ = persistent_config(32, 1024, torch.bfloat16, arch=9)  # 2 KB rows: two 16-row tiles
    assert (cfg.block_b, persistent_grid(32, 1024, cfg)) == (16, (64, 2))
    cfg, _ = persistent_config(32, 768, torch.bfloat16, arch=9)  # 1.5 KB rows: one 32-row tile
    assert cfg.block_b == 32
    for dt in DTYPES:
        cfg, reason = persistent_config(16, 300, dt, arch=9)
        assert cfg is None and "not a multiple of 16" in reason and "spills" in reason
    assert persistent_config(16, 120, torch.float32, arch=9)[0] is not None  # K = 128: no spill unaligned
    cfg, _ = persistent_config(32, 256, torch.float32, arch=9, precision="ieee")
    assert cfg.block_b == 16
    cfg, reason = persistent_config(16, 512, torch.float32, arch=9, precision="ieee")
    assert cfg is None and "IEEE" in reason
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        assert choose_fusion("auto", 16, 300, torch.bfloat16, torch.device("cuda"), arch=9) == "step"
    assert "fusion auto -> step" in caplog.text and "not a multiple of 16" in caplog.text
