"""The functional forms ``lstm_triton.lstm / gru / rnn`` refuse biases of any shape but ``(G·H,)``
on every backend: the kernels read G·H values from the pointer, so a short bias would be read out
of bounds, a long one cut, and a ``(1,)`` one would not broadcast as torch's ops do."""

import pytest
import torch

import lstm_triton

from .helpers import DEVICE

FUNCTIONS = {"lstm": (lstm_triton.lstm, 4), "gru": (lstm_triton.gru, 3), "rnn": (lstm_triton.rnn, 1)}
I, H = 2, 5


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("which", ["bias_ih", "bias_hh"])
@pytest.mark.parametrize("bad", ["short", "one", "long", "column"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_bias_of_another_shape_is_refused_with_its_name(name, bad, which, backend):
    fn, G = FUNCTIONS[name]
    shape = {"short": (G * H - 1,), "one": (1,), "long": (2 * G * H,), "column": (G * H, 1)}[bad]
    biases = {"bias_ih": torch.randn(G * H, device=DEVICE), "bias_hh": torch.randn(G * H, device=DEVICE)}
    biases[which] = torch.randn(shape, device=DEVICE)
    x = torch.randn(3, 2, I, device=DEVICE)
    w_ih, w_hh = torch.randn(G * H, I, device=DEVICE), torch.randn(G * H, H, device=DEVICE)
    with pytest.raises(RuntimeError, match=rf"^{which} must have shape \({G * H},\)") as info:
        fn(x, w_ih, w_hh, biases["bias_ih"], biases["bias_hh"], backend=backend)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_one_bias_alone_is_still_accepted(name):
    """nn's layers always have both biases or none; the functional form also takes one alone (the
    other is zero), against the torch backend on the same call."""
    fn, G = FUNCTIONS[name]
    x = torch.randn(3, 2, I, device=DEVICE)
    w_ih, w_hh = torch.randn(G * H, I, device=DEVICE), torch.randn(G * H, H, device=DEVICE)
    b = torch.randn(G * H, device=DEVICE)
    ours = fn(x, w_ih, w_hh, None, b, backend="triton")[0]
    ref = fn(x, w_ih, w_hh, torch.zeros_like(b), b, backend="torch")[0]
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
