"""lstm_triton.LSTM as a drop-in: construction, state_dict, backend choice and argument errors."""

import logging

import pytest
import torch
from torch import nn

import lstm_triton

from .helpers import DEVICE


def test_same_constructor_names_shapes_and_default_init():
    kwargs = dict(num_layers=2, bias=True, batch_first=True, dropout=0.1, bidirectional=True)
    torch.manual_seed(0)
    ref = nn.LSTM(5, 7, **kwargs)
    torch.manual_seed(0)
    ours = lstm_triton.LSTM(5, 7, **kwargs)
    assert isinstance(ours, nn.LSTM)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))


def test_state_dict_moves_both_ways():
    ours, ref = lstm_triton.LSTM(4, 6, num_layers=2), nn.LSTM(4, 6, num_layers=2)
    ours.load_state_dict(ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))
    ref2 = nn.LSTM(4, 6, num_layers=2)
    ref2.load_state_dict(lstm_triton.LSTM(4, 6, num_layers=2).state_dict())


@pytest.mark.skipif(DEVICE != "cpu", reason="kernels are compiled, not interpreted, when a GPU is present")
def test_auto_backend_uses_triton_under_the_interpreter_and_logs_why(caplog, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = lstm_triton.LSTM(3, 5)
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        model(torch.randn(2, 1, 3))
    assert "backend auto -> triton" in caplog.text and "fusion auto -> persistent" in caplog.text


def test_auto_backend_uses_torch_on_cpu_without_the_interpreter(caplog, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(0)
    model, ref = lstm_triton.LSTM(3, 5), nn.LSTM(3, 5)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(4, 2, 3)
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        out = model(x)[0]
    assert "backend auto -> torch" in caplog.text
    assert torch.equal(out, ref(x)[0])


def test_triton_backend_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = lstm_triton.LSTM(3, 5, backend="triton")
    with pytest.raises(ValueError, match="backend='triton' needs a CUDA tensor"):
        model(torch.randn(2, 1, 3))


@pytest.mark.parametrize("name,value", [("fusion", "warp"), ("backend", "cudnn")])
def test_unknown_fusion_or_backend_is_rejected(name, value):
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        lstm_triton.LSTM(3, 5, **{name: value})


def _bad_calls():
    x = torch.randn(7, 3, 5)
    state = torch.zeros(1, 3, 20)
    return {
        "input-rank-4": (torch.randn(2, 7, 3, 5), None),
        "input-rank-1": (torch.randn(5), None),
        "feature-size": (torch.randn(7, 3, 6), None),
        "input-dtype": (x.double(), None),
        "h0-shape": (x, (torch.zeros(1, 4, 20), state)),
        "c0-shape": (x, (state, torch.zeros(2, 3, 20))),
        "h0-rank": (x, (torch.zeros(3, 20), state)),
        "h0-dtype": (x, (state.double(), state)),
        "c0-dtype": (x, (state, state.half())),
        "h0-device": (x, (torch.zeros(1, 3, 20, device="meta"), state)),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_raises_what_nn_lstm_raises(case):
    x, hx = _bad_calls()[case]
    ref = nn.LSTM(5, 20)
    with pytest.raises(Exception) as expected:
        ref(x, hx)
    ours = lstm_triton.LSTM(5, 20, backend="triton", device=DEVICE)
    move = lambda t: t if t.device.type == "meta" else t.to(DEVICE)
    with pytest.raises(type(expected.value)) as actual:
        ours(move(x), None if hx is None else tuple(move(t) for t in hx))
    message = str(actual.value)
    assert "\n" not in message and len(message) < 300
    assert any(word in message for word in ("size", "dtype", "device", "2D or 3D", "3-D", "dimensions")), message


@pytest.mark.parametrize("B,H,dtype,arch,sms,expected", [
    (32, 256, torch.float32, 9, 132, "persistent"),  # the d2l shape on an H100/H200
    (16, 768, torch.bfloat16, 9, 132, "persistent"),  # B=16, T=1024, I=H=768 (the cuDNN comparison point)
    (16, 768, torch.float32, 9, 132, "step"),  # fp32 slice of 256 KB does not stay on chip
    (128, 256, torch.float32, 9, 132, "persistent"),  # 16 hidden slices × 4 batch tiles = 64 programs
    (288, 256, torch.float32, 9, 132, "step"),  # 16 × 9 = 144 programs > 132 SMs
    (16, 2048, torch.bfloat16, 9, 132, "step"),  # H beyond the persistent limit
    (16, 768, torch.bfloat16, 8, 108, "persistent"),  # A100: K = 512 + 256 pieces, ~124 KB within its budget
    (32, 256, torch.float32, 8, 108, "persistent"),
], ids=["d2l-sm90", "large-bf16-sm90", "large-fp32-sm90", "B128", "B288", "H2048", "large-bf16-sm80", "d2l-sm80"])
def test_auto_fusion_choice_on_gpus(B, H, dtype, arch, sms, expected, caplog):
    from lstm_triton.layers.backend import choose_fusion

    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        chosen = choose_fusion("auto", B, H, dtype, torch.device("cuda"), arch=arch, sms=sms)
    assert chosen == expected
    assert f"fusion auto -> {expected}" in caplog.text
