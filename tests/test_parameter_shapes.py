"""Parameters of the wrong shape never reach a kernel (which reads as many elements as the shape
should have from the pointer): every cell, every level, a one-line RuntimeError naming the
parameter, where nn raises (or, for a wrong weight_ih of nn.LSTM, silently runs)."""

import pytest
import torch
from torch import nn

import lstm_triton

from .helpers import CELLS, DEVICE

LEVELS = ["cell", "step", "persistent"]


def _module(cell, fusion, **kwargs):
    _, name, extra = CELLS[cell]
    return getattr(lstm_triton, name)(3, 4, fusion=fusion, backend="triton", **extra, **kwargs).to(DEVICE)


WRONG = {  # parameter -> the wrong value given the layer's own one
    "bias_hh_l0": lambda p: p.detach()[:-1].clone(),
    "bias_ih_l0": lambda p: torch.cat([p.detach(), p.detach()[:1]]),
    # transposed (nn's (H, 3H) mistake for a GRU); an RNN's square W_hh loses a column instead
    "weight_hh_l0": lambda p: p.detach().t().contiguous() if p.shape[0] != p.shape[1] else p.detach()[:, :-1].clone(),
    "weight_ih_l0": lambda p: p.detach()[:, :-1].clone(),
}


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("param", WRONG)
def test_a_parameter_of_the_wrong_shape_is_a_one_line_error(cell, fusion, param):
    layer = _module(cell, fusion)
    right = tuple(getattr(layer, param).shape)
    setattr(layer, param, nn.Parameter(WRONG[param](getattr(layer, param))))
    with pytest.raises(RuntimeError, match=rf"^{param} must have shape \({right[0]},") as info:
        layer(torch.randn(5, 2, 3, device=DEVICE))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("change", ["bidirectional", "num_layers", "bias"])
def test_settings_changed_after_construction_name_the_missing_parameter(cell, change):
    """nn raises a RuntimeError about its weight list; ours names the parameter it lacks."""
    layer = _module(cell, "step", bias=False)
    setattr(layer, change, {"bidirectional": True, "num_layers": 2, "bias": True}[change])
    missing = {"bidirectional": "weight_ih_l0_reverse", "num_layers": "weight_ih_l1", "bias": "bias_ih_l0"}[change]
    with pytest.raises(RuntimeError, match=f"^{missing} is missing: "):
        layer(torch.randn(5, 2, 3, device=DEVICE))


def test_the_projection_s_parameters_are_checked_too():
    layer = lstm_triton.LSTM(3, 4, proj_size=2, num_layers=2, backend="triton", fusion="step").to(DEVICE)
    assert layer(torch.randn(5, 2, 3, device=DEVICE))[0].shape == (5, 2, 2)  # the right shapes pass
    layer.weight_hr_l1 = nn.Parameter(torch.randn(2, 5, device=DEVICE))
    with pytest.raises(RuntimeError, match=r"^weight_hr_l1 must have shape \(2, 4\), got \(2, 5\)$"):
        layer(torch.randn(5, 2, 3, device=DEVICE))


@pytest.mark.parametrize("fn, gates", [(lstm_triton.lstm, 4), (lstm_triton.gru, 3), (lstm_triton.rnn, 1)])
def test_functional_weights_that_are_not_2d_say_so(fn, gates):
    x = torch.randn(5, 2, 3, device=DEVICE)
    with pytest.raises(RuntimeError, match=r"weight_ih and weight_hh must be 2-D, got 2-D and 3-D$"):
        fn(x, torch.randn(gates * 4, 3, device=DEVICE), torch.randn(1, gates * 4, 4, device=DEVICE))
