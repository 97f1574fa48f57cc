"""Mismatched devices and dtypes, and configurations the kernels cannot compute (issue 9, items 6, 8).

Every mismatch between input, states and weights raises nn.LSTM's exception type (and, for
devices, its message) before any kernel runs; float64 with backend='triton' names what to use;
bf16 under the interpreter (no bf16 tl.dot there) is routed to the cell level, never computed wrong.
"""

import logging

import pytest
import torch
from torch import nn

import lstm_triton
import lstm_triton.layers.ops as ops

from .helpers import DEVICE, rel_err

LEVELS = ["cell", "step", "persistent"]
PARAMS = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]


@pytest.fixture
def no_kernels(monkeypatch):
    """A kernel launch fails the test: the checks must come first."""
    fail = lambda *a, **k: pytest.fail("a kernel ran")
    monkeypatch.setattr(ops, "FORWARD", {k: fail for k in ops.FORWARD})
    monkeypatch.setattr(ops, "BACKWARD", {k: fail for k in ops.BACKWARD})


def _moved(layer, name, device=None, dtype=None):
    setattr(layer, name, nn.Parameter(getattr(layer, name).detach().to(device=device, dtype=dtype)))
    return layer


def _same_error(make_call, expected_type=None):
    """Run nn.LSTM's and our call; both raise the same type (and, unless given, message)."""
    with pytest.raises(Exception) as expected:
        make_call(nn.LSTM)
    actual_type = expected_type or type(expected.value)
    with pytest.raises(actual_type) as actual:
        make_call(lambda *a, **k: lstm_triton.LSTM(*a, backend="triton", **k))
    return str(expected.value), str(actual.value)


@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("fusion", LEVELS)
def test_a_parameter_on_another_device_raises_nn_lstms_error(name, fusion, no_kernels):
    def call(cls):
        layer = _moved(cls(3, 5, **({} if cls is nn.LSTM else {"fusion": fusion})), name, device="meta")
        return layer(torch.randn(4, 2, 3))

    expected, actual = _same_error(call)
    assert actual == expected


def test_an_input_on_another_device_than_the_weights_raises_nn_lstms_error(no_kernels):
    """The backend is not chosen from the input alone: a meta input with CPU weights is nn.LSTM's
    RuntimeError, not 'backend=triton needs a CUDA tensor'."""
    expected, actual = _same_error(lambda cls: cls(3, 5)(torch.randn(4, 2, 3, device="meta")))
    assert actual == expected


@pytest.mark.parametrize("which", [0, 1], ids=["h0", "c0"])
def test_a_state_on_another_device_raises_nn_lstms_error(which, no_kernels):
    def call(cls):
        states = [torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)]
        states[which] = states[which].to("meta")
        return cls(3, 5)(torch.randn(4, 2, 3), tuple(states))

    expected, actual = _same_error(call)
    assert actual == expected


@pytest.mark.parametrize("case", ["h0-float64", "c0-float16", "weight_ih-float64", "weight_hh-float64",
                                  "weight_hh-bfloat16", "bias_ih-float64"])
def test_a_dtype_mismatch_raises_nn_lstms_error_type_naming_the_tensor(case, no_kernels):
    """nn.LSTM's type (RuntimeError, and ValueError for weight_ih, the weight nn.LSTM compares the input
    with). nn.LSTM's CPU messages come from oneDNN ("get_mkldnn_dtype: unsupported data type"), so ours
    name the tensor and both dtypes instead. (oneDNN also runs fp16/bf16 biases beside fp32 weights;
    we refuse those, as a mismatch.)"""
    what, dtype = case.split("-")
    dtype = getattr(torch, dtype)

    def call(cls):
        layer = cls(3, 5)
        states = [torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)]
        if what in ("h0", "c0"):
            states[what == "c0"] = states[what == "c0"].to(dtype)
        else:
            _moved(layer, f"{what}_l0", dtype=dtype)
        return layer(torch.randn(4, 2, 3), tuple(states))

    _, message = _same_error(call)
    name = {"h0": "hidden[0]", "c0": "hidden[1]", "weight_ih": "weight dtype"}.get(what, what)
    assert name in message and str(dtype) in message and "\n" not in message


def test_functional_mismatches_raise_before_any_kernel(no_kernels):
    x, w_ih, w_hh, b = torch.randn(4, 2, 3), torch.randn(20, 3), torch.randn(20, 5), torch.randn(20)
    with pytest.raises(RuntimeError, match="found input tensor at cpu and parameter tensor at meta"):
        lstm_triton.lstm(x, w_ih, w_hh.to("meta"), b, b, backend="triton")
    with pytest.raises(RuntimeError, match="found input tensor at cpu and hidden tensor at meta"):
        lstm_triton.lstm(x, w_ih, w_hh, hx=(torch.zeros(2, 5), torch.zeros(2, 5, device="meta")), backend="triton")
    with pytest.raises(RuntimeError, match=r"hx\[0\] dtype \(torch.float64\)"):
        lstm_triton.lstm(x, w_ih, w_hh, hx=(torch.zeros(2, 5).double(), torch.zeros(2, 5)), backend="triton")
    with pytest.raises(RuntimeError, match=r"parameter bias_hh dtype \(torch.float16\)"):
        lstm_triton.lstm(x, w_ih, w_hh, b, b.half(), backend="triton")


def test_float64_with_the_triton_backend_says_what_to_use():
    for call in (lambda: lstm_triton.LSTM(3, 5, backend="triton", dtype=torch.float64)(torch.randn(4, 2, 3).double()),
                 lambda: lstm_triton.lstm(*(torch.randn(s).double() for s in ((4, 2, 3), (20, 3), (20, 5))),
                                          backend="triton")):
        with pytest.raises(ValueError, match="backend='torch' or backend='auto'"):
            call()
    y = lstm_triton.LSTM(3, 5, backend="auto", dtype=torch.float64)(torch.randn(4, 2, 3).double())[0]
    assert y.dtype == torch.float64


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's missing bf16 tl.dot")
@pytest.mark.parametrize("fusion", ["auto", "step", "persistent"])
def test_bf16_under_the_interpreter_runs_at_the_cell_level_and_is_right(fusion, caplog):
    """Step and persistent would return numbers off by 400% (gradients by 1e9): routed to cell."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, dtype=torch.float64)
    ours = lstm_triton.LSTM(3, 5, fusion=fusion, backend="triton", dtype=torch.bfloat16)
    ours.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})  # the same rounded weights
    x = torch.randn(6, 2, 3).to(torch.bfloat16)
    xr = x.double().requires_grad_()
    xo = x.clone().requires_grad_()
    with caplog.at_level(logging.DEBUG, logger="lstm_triton"):
        y = ours(xo)[0]
    assert f"fusion {fusion} -> cell" in caplog.text and "bf16" in caplog.text
    y_ref = ref(xr)[0]
    y.float().sum().backward()
    y_ref.sum().backward()
    errors = {"y": rel_err(y, y_ref), "x": rel_err(xo.grad, xr.grad),
              "weight_hh": rel_err(ours.weight_hh_l0.grad, ref.weight_hh_l0.grad)}
    assert max(errors.values()) <= 1e-2, errors
    y_fn = lstm_triton.lstm(x, *(getattr(ours, p) for p in PARAMS), fusion=fusion, backend="triton")[0]
    assert rel_err(y_fn, y_ref) <= 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device beside the CPU")
@pytest.mark.parametrize("where", ["weights-on-cuda", "input-on-cuda"])
def test_cuda_and_cpu_mixed_raise_nn_lstms_error(where, no_kernels):
    """The issue's case: weights on one device, input on another (was a ValueError from the backend)."""
    weights, inputs = ("cuda", "cpu") if where == "weights-on-cuda" else ("cpu", "cuda")
    expected, actual = _same_error(lambda cls: cls(3, 5).to(weights)(torch.randn(4, 2, 3, device=inputs)))
    assert actual == expected
