"""The kernels' pointwise helpers against torch in float64 (elementwise, relative)."""

import pytest
import torch
import triton
import triton.language as tl

from lstm_triton.kernels.lstm_math import tanh

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the interpreter's formula; CUDA: libdevice


@triton.jit
def _tanh_kernel(x_ptr, y_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    tl.store(y_ptr + offs, tanh(tl.load(x_ptr + offs, mask=mask)), mask=mask)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # e^200 = inf, by design
def test_tanh_has_small_relative_error_from_tiny_to_saturated_inputs():
    mags = torch.logspace(-12, 2, 2000, dtype=torch.float64)
    x = torch.cat([mags, -mags, torch.tensor([0.0, 0.625, -0.625, 0.6249999, 88.0, -100.0])]).float()
    y = torch.full_like(x, float("nan"), device=DEVICE)
    _tanh_kernel[(triton.cdiv(x.numel(), 1024),)](x.to(DEVICE), y, x.numel(), BLOCK=1024)
    y = y.cpu()
    expected = torch.tanh(x.double())
    rel = ((y.double() - expected).abs() / expected.abs().clamp_min(1e-300))
    rel[expected == 0] = y[expected == 0].double().abs()
    assert float(rel.max()) < 5e-7, float(rel.max())
    assert torch.equal(y[x.abs() > 20], torch.sign(x[x.abs() > 20]))
