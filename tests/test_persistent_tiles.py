"""The persistent level at the exact GPU (sm_90) tiles, under the interpreter, on the grids that
its one-after-another programs can run: one hidden slice (H ≤ 16), one or several batch tiles.
Each batch tile has its own barrier counter, so its single program never waits for another.
Checked against nn.LSTM in float64: output, h_n, c_n and every gradient (≤ 1e-5); GRU and the
plain RNN (tanh, relu) against nn.GRU / nn.RNN the same way, on the same skeleton.
"""

import logging

import pytest
import torch
from torch import nn

import lstm_triton
from lstm_triton.kernels.buffers import set_poison
from lstm_triton.kernels.launch_config import (
    persistent_config,
    persistent_grid,
    set_interpreter_concurrent_programs,
    use_gpu_tiles,
)

from .helpers import DEVICE, assert_close, compare_with_nn, rel_err

pytestmark = pytest.mark.skipif(DEVICE != "cpu", reason="interpreter runs of GPU tiles (CUDA runs them anyway)")

SHAPES = {  # (T, B, I, H): grid (hidden slices, batch tiles) on sm_90
    "B3-H9-one-16-row-tile": (5, 3, 4, 9),
    "B20-H16-one-32-row-tile": (4, 20, 3, 16),
    "B40-H13-two-batch-tiles": (3, 40, 5, 13),
    "B70-H16-three-batch-tiles": (3, 70, 3, 16),
}


@pytest.fixture
def sm90_tiles():
    """The sm_90 grid and tiles under the interpreter (as the multi-program harness gets them)."""
    use_gpu_tiles(True)
    set_interpreter_concurrent_programs(True)
    set_poison(True)
    yield
    set_poison(False)
    set_interpreter_concurrent_programs(False)
    use_gpu_tiles(False)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_gpu_tiles_match_nn_lstm(shape, sm90_tiles, caplog):
    T, B, I, H = shape
    cfg, _ = persistent_config(B, H, torch.float32, torch.device(DEVICE))
    n_h, n_b = persistent_grid(B, H, cfg)
    assert n_h == 1 and n_b == -(-B // cfg.block_b)  # runnable one program after another
    gen = torch.Generator().manual_seed(B * H)
    ref = nn.LSTM(I, H, dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    ours = lstm_triton.LSTM(I, H, fusion="persistent", backend="triton", device=DEVICE)
    ours.load_state_dict(ref.state_dict())
    leaves64 = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_()
                for s in ((T, B, I), (1, B, H), (1, B, H))]
    leaves = [t.detach().float().requires_grad_() for t in leaves64]
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        out = ours(leaves[0], (leaves[1], leaves[2]))
    assert "fusion persistent -> persistent" in caplog.text and "≤ 132 SMs" in caplog.text
    expected = ref(leaves64[0], (leaves64[1], leaves64[2]))
    flat, flat64 = [out[0], *out[1]], [expected[0], *expected[1]]
    upstream = [torch.randn(e.shape, generator=gen, dtype=torch.float64) for e in flat64]
    sum((e * u).sum() for e, u in zip(flat64, upstream)).backward()
    sum((a * u.float()).sum() for a, u in zip(flat, upstream)).backward()
    errors = {name: rel_err(a, e) for name, a, e in zip(("output", "h_n", "c_n"), flat, flat64)}
    errors |= {f"d_{name}": rel_err(a.grad, e.grad) for name, a, e in zip(("input", "h0", "c0"), leaves, leaves64)}
    errors |= {f"d_{n}": rel_err(p.grad, q.grad) for (n, p), q in zip(ours.named_parameters(), ref.parameters())}
    bad = {k: v for k, v in errors.items() if not v <= 1e-5}
    assert not bad, bad


@pytest.mark.parametrize("cell", ["GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("shape", [SHAPES["B40-H13-two-batch-tiles"]], ids=["B40-H13-two-batch-tiles"])
def test_gpu_tiles_of_gru_and_rnn_match_nn(cell, shape, sm90_tiles, caplog):
    T, B, I, H = shape
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        errors = compare_with_nn("persistent", T, B, I, H, seed=B * H, cell=cell)
    assert f"fusion persistent -> persistent: {cell} B={B} H={H}" in caplog.text and "2 programs" in caplog.text
    assert_close(errors)
