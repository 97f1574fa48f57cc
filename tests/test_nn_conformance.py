"""Conformance: ``lstm_triton.LSTM(..., backend='triton')`` behaves as ``torch.nn.LSTM`` documents.

Every case runs our module (the Triton kernels; interpreted on CPU tensors under
TRITON_INTERPRET=1) next to ``nn.LSTM`` holding the same weights and checks what a user observes:
constructor errors and warnings, input/state shapes and their errors, values and gradients
(relative error ≤ 1e-5 against nn.LSTM in float64), dropout, weight layout, state_dict,
hooks, parametrizations, copies and pickles, grad modes, strides, NaN/inf, dtype conversions
and repr. Written from nn.LSTM's documentation and observed behaviour; nn.LSTM is the truth, so
a case where ours differs fails (no xfail). Shapes are tiny (T ≤ 5, B ≤ 3, H ≤ 12).
"""

from __future__ import annotations

import copy
import io
import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import lstm_triton
from lstm_triton.kernels.buffers import set_poison

from .conformance_helpers import (
    LEVELS,
    TOL,
    assert_close,
    assert_same_nonfinite,
    compare_forward_backward,
    loss_of,
    make_pair,
    raised,
    randn,
)
from .helpers import DEVICE, nn_lstm_runs_bf16_on_cpu


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every kernel output starts as NaN, so an element a kernel forgets to write fails."""
    set_poison(True)
    yield
    set_poison(False)


def ours_cls(*args, **kwargs):
    return lstm_triton.LSTM(*args, backend="triton", **kwargs)


def assert_same_exception(actual: BaseException, expected: BaseException) -> None:
    assert type(actual) is type(expected), f"{type(actual).__name__}({actual}) != {type(expected).__name__}({expected})"
    assert str(actual) == str(expected)


# ---------------------------------------------------------------------------------------------
# Constructor: accepted arguments, errors, warnings, weight layout
# ---------------------------------------------------------------------------------------------

CONSTRUCTOR_ERRORS = [
    pytest.param((0, 4), {}, id="input_size-zero"),
    pytest.param((-1, 4), {}, id="input_size-negative"),
    pytest.param((2.0, 4), {}, id="input_size-float"),
    pytest.param(("3", 4), {}, id="input_size-str"),
    pytest.param((3, 0), {}, id="hidden_size-zero"),
    pytest.param((3, -2), {}, id="hidden_size-negative"),
    pytest.param((3, 2.5), {}, id="hidden_size-float"),
    pytest.param((3, 4), dict(num_layers=0), id="num_layers-zero"),
    pytest.param((3, 4), dict(num_layers=-1), id="num_layers-negative"),
    pytest.param((3, 4), dict(num_layers=2.0), id="num_layers-float"),
    pytest.param((3, 4), dict(dropout=-0.1), id="dropout-negative"),
    pytest.param((3, 4), dict(dropout=1.5), id="dropout-above-one"),
    pytest.param((3, 4), dict(dropout=True), id="dropout-bool"),
    pytest.param((3, 4), dict(dropout="0.5"), id="dropout-str"),
    pytest.param((3, 4), dict(proj_size=-1), id="proj_size-negative"),
    pytest.param((3, 4), dict(proj_size=4), id="proj_size-equal-hidden"),
    pytest.param((3, 4), dict(proj_size=5), id="proj_size-above-hidden"),
    pytest.param((3, 4), dict(bias=1), id="bias-int"),
    pytest.param((3, 4), dict(batch_first="yes"), id="batch_first-str"),
    pytest.param((3, 4), dict(dtype=torch.int32), id="dtype-int"),
    pytest.param((3, 4), dict(nonlinearity="relu"), id="unknown-keyword"),
    pytest.param((3,), {}, id="hidden_size-missing"),
    pytest.param((3, 4, 1, True, False, 0.0, False, 0, None, None, 7), {}, id="too-many-positional"),
]


@pytest.mark.parametrize("args,kwargs", CONSTRUCTOR_ERRORS)
def test_constructor_error_matches_nn_lstm(args, kwargs):
    expected = raised(lambda: nn.LSTM(*args, **kwargs))
    assert_same_exception(raised(lambda: ours_cls(*args, **kwargs)), expected)


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(dropout=0.5), id="dropout-0.5"),
    pytest.param(dict(dropout=1), id="dropout-int-1"),
    pytest.param(dict(dropout=0.3, bidirectional=True), id="dropout-bidirectional"),
])
def test_dropout_with_one_layer_warns_as_nn_lstm(kwargs):
    with pytest.warns(UserWarning) as expected:
        nn.LSTM(3, 4, **kwargs)
    with pytest.warns(UserWarning) as actual:
        ours_cls(3, 4, **kwargs)
    assert [str(w.message) for w in actual] == [str(w.message) for w in expected]


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(dropout=0.0), id="dropout-zero"),
    pytest.param(dict(dropout=0.5, num_layers=2), id="dropout-two-layers"),
])
def test_no_warning_where_nn_lstm_gives_none(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.LSTM(3, 4, **kwargs)
        ours_cls(3, 4, **kwargs)


ACCEPTED = [
    pytest.param((5, 7), {}, id="defaults"),
    pytest.param((5, 7, 2, False, True, 0.25, True), {}, id="all-positional"),
    pytest.param((5, 7), dict(num_layers=3, bidirectional=True), id="3-layers-bidirectional"),
    pytest.param((5, 7), dict(bias=False, num_layers=2), id="no-bias"),
    pytest.param((5, 7), dict(proj_size=3, num_layers=2, bidirectional=True), id="proj_size"),
    pytest.param((5, 7), dict(proj_size=2, bias=False), id="proj_size-no-bias"),
    pytest.param((5, 7), dict(dropout=1, num_layers=2), id="dropout-int"),
    pytest.param((5, 7), dict(bidirectional=1), id="bidirectional-int"),
    pytest.param((5, 7), dict(dtype=torch.float16), id="dtype-float16"),
    pytest.param((5, 7), dict(dtype=torch.float64), id="dtype-float64"),
    pytest.param((5, 7), dict(device="meta"), id="device-meta"),
    pytest.param((5, 7), dict(device=torch.device("cpu"), dtype=torch.bfloat16), id="device-cpu-bfloat16"),
]


@pytest.mark.parametrize("args,kwargs", ACCEPTED)
def test_constructor_attributes_and_weight_layout_match_nn_lstm(args, kwargs):
    """Same attributes, parameter names/order/shapes/dtypes/devices, _flat_weights_names,
    all_weights, and (same seed) the same default initial values."""
    torch.manual_seed(0)
    ref = nn.LSTM(*args, **kwargs)
    torch.manual_seed(0)
    ours = ours_cls(*args, **kwargs)
    assert isinstance(ours, nn.LSTM)
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "training"):
        assert getattr(ours, attr) == getattr(ref, attr) and type(getattr(ours, attr)) is type(getattr(ref, attr)), attr
    assert ours._flat_weights_names == ref._flat_weights_names
    assert ours._all_weights == ref._all_weights
    describe = lambda m: [(n, p.shape, p.dtype, p.device, p.requires_grad) for n, p in m.named_parameters()]
    assert describe(ours) == describe(ref)
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    params = dict(ours.named_parameters())
    assert all(w is params[n] for ws, names in zip(ours.all_weights, ours._all_weights) for w, n in zip(ws, names))
    assert all(w is params[n] for w, n in zip(ours._flat_weights, ours._flat_weights_names))
    if kwargs.get("device") != "meta":
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))


# ---------------------------------------------------------------------------------------------
# Shapes: batched / unbatched / batch_first / bidirectional / multi-layer; values and gradients
# ---------------------------------------------------------------------------------------------

# id: (input_size, hidden_size, module kwargs, input shape, state shape or None for hx=None)
SHAPES = {
    "batched-hx": (5, 12, {}, (5, 3, 5), (1, 3, 12)),
    "batched-no-hx": (5, 12, {}, (5, 3, 5), None),
    "unbatched-hx": (5, 12, {}, (5, 5), (1, 12)),
    "unbatched-no-hx": (5, 12, {}, (4, 5), None),
    "batch_first-hx": (5, 12, dict(batch_first=True), (3, 5, 5), (1, 3, 12)),
    "batch_first-unbatched-hx": (5, 12, dict(batch_first=True), (4, 5), (1, 12)),
    "bidirectional-hx": (5, 12, dict(bidirectional=True), (4, 2, 5), (2, 2, 12)),
    "2-layers-hx": (5, 12, dict(num_layers=2), (4, 3, 5), (2, 3, 12)),
    "2-layers-bidirectional-batch_first-hx": (
        5, 12, dict(num_layers=2, bidirectional=True, batch_first=True), (2, 4, 5), (4, 2, 12)),
    "2-layers-bidirectional-unbatched-no-hx": (5, 12, dict(num_layers=2, bidirectional=True), (3, 5), None),
    "no-bias-hx": (5, 12, dict(bias=False), (4, 3, 5), (1, 3, 12)),
    "T1-B1-I1-H1": (1, 1, {}, (1, 1, 1), (1, 1, 1)),
}


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("case", list(SHAPES))
def test_values_and_gradients_match_nn_lstm(case, fusion):
    """Output (T,B,D·H) / (B,T,D·H) / (T,D·H), h_n and c_n (L·D,B,H) / (L·D,H), and the gradients
    of input, h0, c0 and every parameter, against nn.LSTM in float64."""
    I, H, kwargs, x_shape, s_shape = SHAPES[case]
    ours, ref = make_pair(I, H, fusion=fusion, **kwargs)
    leaves = [randn(*x_shape, seed=1)]
    if s_shape is not None:
        leaves += [randn(*s_shape, seed=2), randn(*s_shape, seed=3)]
    compare_forward_backward(ours, ref, [t.to(DEVICE).requires_grad_() for t in leaves])


def test_keyword_call_and_hx_as_list():
    """``forward(input=..., hx=[h0, c0])``: nn.LSTM accepts keywords and a list for hx."""
    ours, ref = make_pair(5, 6)
    x, h0, c0 = randn(3, 2, 5, seed=1), randn(1, 2, 6, seed=2), randn(1, 2, 6, seed=3)
    out = ours(input=x.to(DEVICE), hx=[h0.to(DEVICE), c0.to(DEVICE)])
    expected = ref(input=x.double(), hx=[h0.double(), c0.double()])
    assert_close("output", out[0], expected[0])
    assert_close("c_n", out[1][1], expected[1][1])


# ---------------------------------------------------------------------------------------------
# Wrong shapes, dtypes and devices: same exception type and message as nn.LSTM
# ---------------------------------------------------------------------------------------------

def _z(*shape, **kw):
    return torch.zeros(shape, **kw)


# id: (module kwargs, input, hx)
BAD_CALLS = {
    "input-0d": ({}, torch.tensor(1.0), None),
    "input-1d": ({}, _z(5), None),
    "input-4d": ({}, _z(2, 3, 2, 5), None),
    "input-feature-size": ({}, _z(3, 2, 6), None),
    "unbatched-input-feature-size": ({}, _z(3, 6), None),
    "input-float64-on-float32-module": ({}, _z(3, 2, 5, dtype=torch.float64), None),
    "input-float16-on-float32-module": ({}, _z(3, 2, 5, dtype=torch.float16), None),
    "input-int64": ({}, _z(3, 2, 5, dtype=torch.int64), None),
    "unbatched-input-hx-3d": ({}, _z(3, 5), (_z(1, 1, 4), _z(1, 1, 4))),
    "batched-input-hx-2d": ({}, _z(3, 2, 5), (_z(1, 4), _z(1, 4))),
    "batched-input-c0-2d": ({}, _z(3, 2, 5), (_z(1, 2, 4), _z(2, 4))),
    "h0-batch": ({}, _z(3, 2, 5), (_z(1, 3, 4), _z(1, 2, 4))),
    "c0-batch": ({}, _z(3, 2, 5), (_z(1, 2, 4), _z(1, 3, 4))),
    "c0-hidden": ({}, _z(3, 2, 5), (_z(1, 2, 4), _z(1, 2, 5))),
    "h0-layers": (dict(num_layers=2), _z(3, 2, 5), (_z(1, 2, 4), _z(2, 2, 4))),
    "h0-directions": (dict(bidirectional=True), _z(3, 2, 5), (_z(1, 2, 4), _z(2, 2, 4))),
    "batch_first-h0-batch-first": (dict(batch_first=True), _z(2, 3, 5), (_z(1, 3, 4), _z(1, 3, 4))),
    "unbatched-h0-layers": ({}, _z(3, 5), (_z(2, 4), _z(1, 4))),
    "hx-single-tensor": ({}, _z(3, 2, 5), _z(1, 2, 4)),
    "hx-one-tuple": ({}, _z(3, 2, 5), (_z(1, 2, 4),)),
    "hx-three-tuple": ({}, _z(3, 2, 5), (_z(1, 2, 4), _z(1, 2, 4), _z(1, 2, 4))),
    "hx-nones": ({}, _z(3, 2, 5), (None, None)),
    "h0-device-meta": ({}, _z(3, 2, 5), (_z(1, 2, 4, device="meta"), _z(1, 2, 4))),
    "empty-sequence": ({}, _z(0, 2, 5), None),
    "empty-unbatched-sequence": ({}, _z(0, 5), None),
}


def _to_device(value):
    """Tensors (also inside tuples) to DEVICE, except those deliberately on 'meta'."""
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    if isinstance(value, torch.Tensor) and value.device.type != "meta":
        return value.to(DEVICE)
    return value


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_call_raises_what_nn_lstm_raises(case):
    kwargs, x, hx = BAD_CALLS[case]
    ref, ours = nn.LSTM(5, 4, device=DEVICE, **kwargs), ours_cls(5, 4, fusion="cell", device=DEVICE, **kwargs)
    x, hx = _to_device(x), _to_device(hx)
    expected = raised(lambda: ref(x, hx))
    assert_same_exception(raised(lambda: ours(x, hx)), expected)


@pytest.mark.parametrize("case", [
    pytest.param((_z(1, 2, 4, dtype=torch.float64), _z(1, 2, 4)), id="h0-float64"),
    pytest.param((_z(1, 2, 4), _z(1, 2, 4, dtype=torch.float16)), id="c0-float16"),
])
def test_state_dtype_mismatch_raises_runtime_error_like_nn_lstm(case):
    """nn.LSTM's message here comes from the CPU kernel (oneDNN), so only the type is compared;
    ours must still give a one-line message naming the state."""
    x, case = _z(3, 2, 5, device=DEVICE), _to_device(case)
    expected = raised(lambda: nn.LSTM(5, 4, device=DEVICE)(x, case))
    actual = raised(lambda: ours_cls(5, 4, fusion="cell", device=DEVICE)(x, case))
    assert type(actual) is type(expected)
    assert "\n" not in str(actual) and "hidden" in str(actual) and "dtype" in str(actual), str(actual)


def test_input_list_raises_attribute_error_like_nn_lstm():
    x = [[1.0] * 5] * 3
    expected = raised(lambda: nn.LSTM(5, 4)(x))
    assert type(raised(lambda: ours_cls(5, 4)(x))) is type(expected)


@pytest.mark.parametrize("fusion", LEVELS)
def test_empty_batch_returns_empty_outputs_like_nn_lstm(fusion):
    ours, ref = make_pair(5, 4, fusion=fusion)
    x = torch.zeros(3, 0, 5, device=DEVICE, requires_grad=True)
    y, (h, c) = ours(x)
    ry, (rh, rc) = ref(x.detach().double())
    assert (y.shape, h.shape, c.shape) == (ry.shape, rh.shape, rc.shape)


# ---------------------------------------------------------------------------------------------
# Dropout, train() / eval()
# ---------------------------------------------------------------------------------------------

def _run_seeded(module, x, seed):
    torch.manual_seed(seed)
    return module(x)


@pytest.mark.skipif(DEVICE != "cpu", reason="cuDNN draws nn.LSTM's dropout masks inside its own kernel")
@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(num_layers=3, dropout=0.5), id="3-layers-p0.5"),
    pytest.param(dict(num_layers=2, dropout=0.4, bidirectional=True, batch_first=True), id="2-layers-bidir-bf-p0.4"),
    pytest.param(dict(num_layers=2, dropout=1.0), id="2-layers-p1"),
])
def test_train_mode_dropout_draws_the_same_masks_as_nn_lstm(kwargs):
    """nn.LSTM drops the outputs of every layer but the last, in training only. From the same
    seed a drop-in draws the same masks, so a training run is reproducible across the swap;
    checked against nn.LSTM in fp32 (its masks; values within 1e-5), gradients included."""
    ours, ref = make_pair(5, 6, ref_dtype=torch.float32, **kwargs)
    assert ours.training and ref.training
    x = randn(3, 4, 5, seed=1).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    out, ref_out = _run_seeded(ours, x, 7), _run_seeded(ref, xr, 7)
    for name, a, e in zip(("output", "h_n", "c_n"), (out[0], *out[1]), (ref_out[0], *ref_out[1])):
        assert_close(name, a, e)
    loss_of(out).backward()
    loss_of(ref_out).backward()
    assert_close("input grad", x.grad, xr.grad)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert_close(f"{name}.grad", p.grad, q.grad)


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(num_layers=2, dropout=0.5), id="2-layers-eval"),
    pytest.param(dict(num_layers=1, dropout=0.5), id="1-layer-train"),
])
def test_no_dropout_in_eval_mode_or_after_the_last_layer(kwargs):
    """eval(): no dropout at all; one layer: dropout never applies (nn.LSTM only warns)."""
    with pytest.warns(UserWarning) if kwargs["num_layers"] == 1 else warnings.catch_warnings():
        ours, ref = make_pair(5, 6, **kwargs)
    if kwargs["num_layers"] == 2:
        ours.eval()
        ref.eval()
    x = randn(4, 3, 5, seed=1).requires_grad_()
    compare_forward_backward(ours, ref, [x])


def test_train_and_eval_flags_match_nn_lstm():
    ours, ref = make_pair(5, 6, num_layers=2, dropout=0.5)
    assert ours.eval() is ours and ref.eval() is ref
    assert (ours.training, ref.training) == (False, False)
    assert ours.train() is ours and ours.training
    assert ours.train(False) is ours and not ours.training
    ours.train()
    ours.requires_grad_(False)
    assert all(not p.requires_grad for p in ours.parameters()) and ours.training


# ---------------------------------------------------------------------------------------------
# state_dict, flatten_parameters, weight reassignment
# ---------------------------------------------------------------------------------------------

def test_state_dict_ours_to_nn_lstm_and_back():
    torch.manual_seed(1)
    ours = ours_cls(5, 6, num_layers=2, bidirectional=True, fusion="cell", device=DEVICE)
    ref = nn.LSTM(5, 6, num_layers=2, bidirectional=True, device=DEVICE)
    sd = ours.state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert ref.load_state_dict(sd) == ref.load_state_dict(ref.state_dict())  # strict, nothing missing
    x = randn(3, 2, 5, seed=2)
    assert_close("nn.LSTM loaded from ours", ours(x)[0], ref.double()(x.double())[0])
    other = nn.LSTM(5, 6, num_layers=2, bidirectional=True, device=DEVICE)  # fresh weights into ours
    ours.load_state_dict(other.state_dict())
    assert_close("ours loaded from nn.LSTM", ours(x)[0], other.double()(x.double())[0])


@pytest.mark.parametrize("edit", ["missing-key", "unexpected-key", "wrong-shape"])
def test_load_state_dict_errors_match_nn_lstm(edit):
    ref, ours = nn.LSTM(5, 6), ours_cls(5, 6)
    sd = ref.state_dict()
    if edit == "missing-key":
        del sd["bias_hh_l0"]
    elif edit == "unexpected-key":
        sd["weight_hr_l0"] = torch.zeros(2, 6)
    else:
        sd["weight_hh_l0"] = torch.zeros(24, 5)
    expected = raised(lambda: nn.LSTM(5, 6).load_state_dict(sd))
    assert_same_exception(raised(lambda: ours.load_state_dict(sd)), expected)


def test_flatten_parameters_is_a_no_op_that_keeps_results():
    ours, ref = make_pair(5, 6, num_layers=2)
    ptrs = [p.data_ptr() for p in ours.parameters()]
    x = randn(3, 2, 5, seed=1)
    before = ours(x)[0]
    assert ours.flatten_parameters() is None
    if DEVICE == "cpu":  # a no-op on CPU; on CUDA nn.LSTM re-points the weights into one cuDNN buffer
        assert [p.data_ptr() for p in ours.parameters()] == ptrs
    assert all(w is p for w, p in zip(ours._flat_weights, ours.parameters()))
    assert torch.equal(ours(x)[0], before)
    assert_close("after flatten_parameters", before, ref(x.double())[0])


def test_assigning_a_new_weight_parameter_is_used_like_nn_lstm():
    ours, ref = make_pair(5, 6)
    new = randn(24, 6, seed=4)
    ours.weight_hh_l0 = nn.Parameter(new.clone())
    ref.weight_hh_l0 = nn.Parameter(new.double())
    x = randn(3, 2, 5, seed=1).requires_grad_()
    compare_forward_backward(ours, ref, [x])


def test_in_place_weight_edit_is_seen_by_the_next_call():
    ours, ref = make_pair(5, 6)
    with torch.no_grad():
        ours.weight_ih_l0.mul_(-2)
        ref.weight_ih_l0.mul_(-2)
    compare_forward_backward(ours, ref, [randn(3, 2, 5, seed=1).requires_grad_()])


# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------

def test_forward_pre_hook_can_replace_input_and_state():
    ours, ref = make_pair(5, 6)

    def pre_hook(module, args):
        x, (h, c) = args
        return 2 * x, (h + 1, c - 1)

    for m in (ours, ref):
        m.register_forward_pre_hook(pre_hook)
    leaves = [randn(3, 2, 5, seed=1).requires_grad_(), randn(1, 2, 6, seed=2).requires_grad_(),
              randn(1, 2, 6, seed=3).requires_grad_()]
    compare_forward_backward(ours, ref, leaves, lambda ls: (ls[0], (ls[1], ls[2])))


def test_forward_hook_sees_the_call_and_can_replace_the_output():
    ours, ref = make_pair(5, 6)
    seen = {}

    def hook(module, args, output):
        seen[module] = (args, output)
        y, (h, c) = output
        return y * 3, (h, c)

    for m in (ours, ref):
        m.register_forward_hook(hook)
    x = randn(3, 2, 5, seed=1)
    out, ref_out = ours(x), ref(x.double())
    assert seen[ours][0][0] is x and len(seen[ours][0]) == len(seen[ref][0])
    assert type(seen[ours][1]) is type(seen[ref][1]) and type(seen[ours][1][1]) is type(seen[ref][1][1])
    assert_close("hooked output", out[0], ref_out[0])


def test_full_backward_hook_gets_the_same_gradients_as_nn_lstm():
    ours, ref = make_pair(5, 6)
    got = {}

    def hook(module, grad_input, grad_output):
        got[module] = (grad_input, grad_output)

    for m in (ours, ref):
        m.register_full_backward_hook(hook)
    x = randn(3, 2, 5, seed=1).to(DEVICE).requires_grad_()
    xr = x.detach().double().requires_grad_()
    loss_of(ours(x)).backward()
    loss_of(ref(xr)).backward()
    for kind, a_all, e_all in zip(("grad_input", "grad_output"), got[ours], got[ref]):
        assert len(a_all) == len(e_all), kind
        for i, (a, e) in enumerate(zip(a_all, e_all)):
            assert (a is None) == (e is None), f"{kind}[{i}]"
            if e is not None:
                assert_close(f"{kind}[{i}]", a, e)
    assert_close("input grad", x.grad, xr.grad)


# ---------------------------------------------------------------------------------------------
# Parametrizations (torch.nn.utils.parametrize / parametrizations)
# ---------------------------------------------------------------------------------------------

class _Symmetric(nn.Module):
    """W_hh (4H×H) -> each H×H gate block symmetrised; a custom parametrization."""

    def forward(self, w):
        blocks = w.unflatten(0, (4, -1))
        return (blocks + blocks.transpose(1, 2)).flatten(0, 1)


PARAMETRIZE = {
    "custom-symmetric-weight_hh": lambda m: parametrize.register_parametrization(m, "weight_hh_l0", _Symmetric()),
    "weight_norm-weight_hh": lambda m: parametrizations.weight_norm(m, "weight_hh_l0"),
    "spectral_norm-weight_hh": lambda m: parametrizations.spectral_norm(m, "weight_hh_l0"),
    "orthogonal-weight_ih": lambda m: parametrizations.orthogonal(m, "weight_ih_l0"),
    "weight_norm-bias-and-weight_ih-l1": lambda m: (parametrizations.weight_norm(m, "weight_ih_l1"),
                                                    parametrize.register_parametrization(m, "bias_hh_l1", nn.Tanh())),
}


@pytest.mark.parametrize("case", list(PARAMETRIZE))
def test_parametrized_weights_are_used_and_trained_like_nn_lstm(case):
    """Forward uses the parametrized weight, gradients reach the original tensors; compared with
    nn.LSTM in fp32 carrying the same parametrization (spectral_norm's random start vector is
    drawn from the same seed for both)."""
    ours, ref = make_pair(5, 6, num_layers=2, ref_dtype=torch.float32)
    for m in (ours, ref):
        torch.manual_seed(5)
        PARAMETRIZE[case](m)
        if case.startswith("spectral_norm"):
            # In training mode every *read* of the weight runs a power-iteration step, and nn.LSTM
            # reads it twice per forward (its _flat_weights refresh): not a documented count, so
            # compare in eval mode, where the stored singular vectors are used as they are.
            m.eval()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    compare_forward_backward(ours, ref, [randn(3, 2, 5, seed=1).requires_grad_()], ref_dtype=torch.float32)


def test_removing_a_parametrization_keeps_the_parametrized_weight():
    ours, ref = make_pair(5, 6)
    for m in (ours, ref):
        parametrize.register_parametrization(m, "weight_hh_l0", _Symmetric())
        parametrize.remove_parametrizations(m, "weight_hh_l0", leave_parametrized=True)
    assert type(ours) is lstm_triton.LSTM
    compare_forward_backward(ours, ref, [randn(3, 2, 5, seed=1).requires_grad_()])


# ---------------------------------------------------------------------------------------------
# Copies and serialisation
# ---------------------------------------------------------------------------------------------

def test_deepcopy_is_an_independent_equal_module():
    ours, ref = make_pair(5, 6, num_layers=2, fusion="step")
    twin = copy.deepcopy(ours)
    assert type(twin) is lstm_triton.LSTM and (twin.fusion, twin.backend) == ("step", "triton")
    assert all(a is not b and torch.equal(a, b) for a, b in zip(twin.parameters(), ours.parameters()))
    assert all(w is p for w, p in zip(twin._flat_weights, twin.parameters()))
    with torch.no_grad():
        twin.weight_hh_l1.zero_()
    x = randn(3, 2, 5, seed=1)
    assert_close("original after editing the copy", ours(x)[0], ref(x.double())[0])
    ref.weight_hh_l1.data.zero_()
    assert_close("edited copy", twin(x)[0], ref(x.double())[0])


def test_torch_save_and_load_of_the_module():
    ours, ref = make_pair(5, 6, bidirectional=True, fusion="persistent")
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is lstm_triton.LSTM and (loaded.fusion, loaded.backend) == ("persistent", "triton")
    assert loaded._flat_weights_names == ref._flat_weights_names
    assert all(w is p for w, p in zip(loaded._flat_weights, loaded.parameters()))
    compare_forward_backward(loaded, ref, [randn(3, 2, 5, seed=1).requires_grad_()])


def test_torch_save_and_load_of_the_state_dict_both_ways():
    ours, ref = make_pair(5, 6, num_layers=2)
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    into_nn = nn.LSTM(5, 6, num_layers=2, device=DEVICE)
    into_nn.load_state_dict(torch.load(buf))  # weights_only=True: plain tensors only
    buf = io.BytesIO()
    torch.save(into_nn.state_dict(), buf)
    buf.seek(0)
    back = ours_cls(5, 6, num_layers=2, fusion="cell", device=DEVICE)
    back.load_state_dict(torch.load(buf))
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), ours.parameters()))
    x = randn(3, 2, 5, seed=1)
    assert_close("round trip", back(x)[0], ref(x.double())[0])


# ---------------------------------------------------------------------------------------------
# Grad modes, frozen parameters, double backward, functional_call, returned tensors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_grad_modes_give_the_same_values_and_no_graph(mode):
    ours, ref = make_pair(5, 6, num_layers=2)
    x = randn(3, 2, 5, seed=1).requires_grad_()
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with ctx():
        out, ref_out = ours(x), ref(x.detach().double())
    for name, a, e in zip(("output", "h_n", "c_n"), (out[0], *out[1]), (ref_out[0], *ref_out[1])):
        assert_close(name, a, e)
        assert not a.requires_grad and a.grad_fn is None, name
        assert a.is_inference() == e.is_inference(), name


FROZEN = {
    "weight_ih-frozen": (("weight_ih_l0",), True),
    "weight_hh-and-bias_hh-frozen": (("weight_hh_l0", "bias_hh_l0"), True),
    "all-frozen-input-grad-only": (("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), True),
    "input-no-grad": ((), False),
}


@pytest.mark.parametrize("case", list(FROZEN))
def test_requires_grad_false_parameters_and_inputs(case):
    """Frozen parameters get no .grad, as in nn.LSTM; every other gradient still matches."""
    frozen, input_grad = FROZEN[case]
    ours, ref = make_pair(5, 6, num_layers=2)
    for m in (ours, ref):
        for name in frozen:
            getattr(m, name).requires_grad_(False)
    leaves = [randn(3, 2, 5, seed=1).requires_grad_(input_grad), randn(2, 2, 6, seed=2).requires_grad_(),
              randn(2, 2, 6, seed=3)]
    compare_forward_backward(ours, ref, leaves)
    assert leaves[2].grad is None


@pytest.mark.skipif(DEVICE != "cpu", reason="nn.LSTM on cuDNN is not twice differentiable")
@pytest.mark.parametrize("fusion", LEVELS)
def test_double_backward_matches_nn_lstm(fusion):
    """nn.LSTM is twice differentiable on CPU: d/dθ ‖∂L/∂x‖² must match (or ours must refuse
    loudly; a silently missing or wrong second derivative fails)."""
    ours, ref = make_pair(5, 6, fusion=fusion)
    x = randn(3, 2, 5, seed=1).requires_grad_()
    xr = x.detach().double().requires_grad_()
    grads = []
    for m, inp in ((ours, x), (ref, xr)):
        (g,) = torch.autograd.grad(loss_of(m(inp)), inp, create_graph=True)
        (g * g).sum().backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for name, e in grads[1].items():
        assert grads[0][name] is not None, f"{name}: no second-order gradient"
        assert_close(f"{name} second-order grad", grads[0][name], e)


def test_functional_call_uses_the_given_parameters():
    ours, ref = make_pair(5, 6)
    params = {n: randn(*p.shape, seed=10 + i) * 0.3 for i, (n, p) in enumerate(ours.named_parameters())}
    x = randn(3, 2, 5, seed=1)
    out = torch.func.functional_call(ours, params, (x,))
    expected = torch.func.functional_call(ref, {n: p.double() for n, p in params.items()}, (x.double(),))
    assert_close("output", out[0], expected[0])
    assert_close("c_n", out[1][1], expected[1][1])


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("which", [pytest.param((0,), id="output-only"), pytest.param((1,), id="h_n-only"),
                                   pytest.param((2,), id="c_n-only")])
def test_loss_on_one_returned_tensor(which, fusion):
    """Unused outputs get no gradient from the caller (autograd passes zeros): the gradients of
    input, states and weights still match nn.LSTM."""
    ours, ref = make_pair(5, 6, num_layers=2, fusion=fusion)
    leaves = [randn(3, 2, 5, seed=1).requires_grad_(), randn(2, 2, 6, seed=2).requires_grad_(),
              randn(2, 2, 6, seed=3).requires_grad_()]
    compare_forward_backward(ours, ref, leaves, which=which)


def test_backward_twice_with_retain_graph_accumulates_like_nn_lstm():
    ours, ref = make_pair(5, 6)
    x = randn(3, 2, 5, seed=1).requires_grad_()
    xr = x.detach().double().requires_grad_()
    for m, inp in ((ours, x), (ref, xr)):
        loss = loss_of(m(inp))
        loss.backward(retain_graph=True)
        loss.backward()
    assert_close("input grad after two backward calls", x.grad, xr.grad)
    assert_close("weight_hh_l0.grad after two backward calls", ours.weight_hh_l0.grad, ref.weight_hh_l0.grad)


def test_weights_tied_across_layers():
    """One Parameter used as two layers' weights: nn.LSTM lists it once and sums its gradients."""
    ours, ref = make_pair(6, 6, num_layers=2)
    for m in (ours, ref):
        m.weight_hh_l1 = m.weight_hh_l0
        m.weight_ih_l1 = m.weight_ih_l0
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    compare_forward_backward(ours, ref, [randn(3, 2, 6, seed=1).requires_grad_()])


def test_meta_init_then_to_empty_and_load_state_dict():
    """The usual large-model recipe: build on 'meta', materialise with to_empty, load weights."""
    _, ref = make_pair(5, 6, num_layers=2)
    ours = ours_cls(5, 6, num_layers=2, fusion="cell", device="meta").to_empty(device=DEVICE)
    ours.load_state_dict(ref.state_dict())
    assert all(w is p for w, p in zip(ours._flat_weights, ours.parameters()))
    compare_forward_backward(ours, ref, [randn(3, 2, 5, seed=1).requires_grad_()])


def test_load_state_dict_with_assign_uses_the_new_tensors():
    ours, ref = make_pair(5, 6)
    _, other = make_pair(5, 6, seed=3, ref_dtype=torch.float32)
    for m in (ours, ref):
        m.load_state_dict(other.state_dict(), assign=True)
    assert ours.weight_hh_l0.data_ptr() == other.weight_hh_l0.data_ptr()
    compare_forward_backward(ours, ref.double(), [randn(3, 2, 5, seed=1).requires_grad_()])


def test_autocast_output_dtypes_match_nn_lstm():
    """Under autocast nn.LSTM runs in the lower precision and returns it (bf16 on CPU, fp16 on
    CUDA); values within the bf16/fp16 bound (1e-2) of the float64 reference."""
    low = torch.bfloat16 if DEVICE == "cpu" else torch.float16
    ours, ref = make_pair(5, 6)
    _, ref32 = make_pair(5, 6, ref_dtype=torch.float32)
    x = randn(3, 2, 5, seed=1)
    # a CPU without oneDNN's bf16 LSTM refuses this call in nn: the rule (the autocast dtype) is what
    # nn gives on every other CPU
    nn_runs = DEVICE != "cpu" or nn_lstm_runs_bf16_on_cpu()
    with torch.autocast(DEVICE, dtype=low):
        out = ours(x)
        expected = ref32(x) if nn_runs else (torch.empty(0, dtype=low), (torch.empty(0, dtype=low),) * 2)
    exact = ref(x.double())
    for name, a, e, r in zip(("output", "h_n", "c_n"), (out[0], *out[1]), (expected[0], *expected[1]),
                             (exact[0], *exact[1])):
        assert a.dtype == e.dtype, f"{name}: {a.dtype}, nn.LSTM under autocast gives {e.dtype}"
        assert_close(name, a, r, tol=1e-2)


@pytest.mark.parametrize("fusion", LEVELS)
def test_returned_tensors_are_not_reused_or_aliased(fusion):
    """A second call must not overwrite the first call's results, and editing h_n / c_n in place
    must not change the output (nn.LSTM returns independent tensors)."""
    ours, ref = make_pair(5, 6, num_layers=2, fusion=fusion)
    x1, x2 = randn(3, 2, 5, seed=1), randn(3, 2, 5, seed=2)
    y1, (h1, c1) = ours(x1)
    ours(x2)
    ry1, (rh1, rc1) = ref(x1.double())
    for name, a, e in (("output", y1, ry1), ("h_n", h1, rh1), ("c_n", c1, rc1)):
        assert_close(f"first call's {name} after a second call", a, e)
    h1.add_(1)
    c1.mul_(-1)
    assert_close("output after editing h_n and c_n in place", y1, ry1)


# ---------------------------------------------------------------------------------------------
# Strides: non-contiguous and expanded (stride-0) inputs and states
# ---------------------------------------------------------------------------------------------

# id: (module kwargs, leaf shapes, build(leaves) -> (input, hx))
STRIDES = {
    "input-transposed": ({}, [(3, 4, 5)], lambda ls: (ls[0].transpose(0, 1), None)),
    "input-time-step-2": ({}, [(8, 3, 5)], lambda ls: (ls[0][::2], None)),
    "input-feature-step-2": ({}, [(4, 3, 10)], lambda ls: (ls[0][..., ::2], None)),
    "input-expanded-batch": ({}, [(4, 1, 5)], lambda ls: (ls[0].expand(4, 3, 5), None)),
    "input-expanded-time": ({}, [(1, 3, 5)], lambda ls: (ls[0].expand(4, 3, 5), None)),
    "batch_first-input-from-time-major": (dict(batch_first=True), [(4, 3, 5)],
                                          lambda ls: (ls[0].transpose(0, 1), None)),
    "unbatched-input-feature-step-2": ({}, [(4, 10)], lambda ls: (ls[0][:, ::2], None)),
    "hx-transposed": ({}, [(4, 3, 5), (3, 1, 12), (3, 1, 12)],
                      lambda ls: (ls[0], (ls[1].transpose(0, 1), ls[2].transpose(0, 1)))),
    "hx-batch-step-2": ({}, [(4, 3, 5), (1, 6, 12), (1, 6, 12)],
                        lambda ls: (ls[0], (ls[1][:, ::2], ls[2][:, ::2]))),
    "hx-expanded-batch": ({}, [(4, 3, 5), (1, 1, 12), (1, 1, 12)],
                          lambda ls: (ls[0], (ls[1].expand(1, 3, 12), ls[2].expand(1, 3, 12)))),
    "hx-hidden-step-2": ({}, [(4, 3, 5), (1, 3, 24), (1, 3, 24)],
                         lambda ls: (ls[0], (ls[1][..., ::2], ls[2][..., ::2]))),
    "2-layers-bidirectional-hx-expanded-layers": (
        dict(num_layers=2, bidirectional=True), [(4, 3, 5), (1, 3, 12), (1, 3, 12)],
        lambda ls: (ls[0], (ls[1].expand(4, 3, 12), ls[2].expand(4, 3, 12)))),
    "unbatched-hx-expanded": ({}, [(4, 5), (1, 1), (1, 1)],
                              lambda ls: (ls[0], (ls[1].expand(1, 12), ls[2].expand(1, 12)))),
}


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("case", list(STRIDES))
def test_non_contiguous_and_expanded_inputs_and_states(case, fusion):
    kwargs, shapes, build = STRIDES[case]
    ours, ref = make_pair(5, 12, fusion=fusion, **kwargs)
    leaves = [randn(*s, seed=i + 1).to(DEVICE).requires_grad_() for i, s in enumerate(shapes)]
    compare_forward_backward(ours, ref, leaves, build)


# ---------------------------------------------------------------------------------------------
# NaN / inf propagation
# ---------------------------------------------------------------------------------------------

def _poke(where: str, index: tuple, value: float):
    def edit(x, h0, c0, module):
        target = {"input": x, "h0": h0, "c0": c0}.get(where)
        with torch.no_grad():
            (getattr(module, where) if target is None else target)[index] = value
    return edit


# id: (module kwargs, where, index, value)
NONFINITE = {
    "nan-in-input": ({}, "input", (2, 1, 0), float("nan")),
    "inf-in-input": ({}, "input", (1, 0, 3), float("inf")),
    "minus-inf-in-input": ({}, "input", (0, 2, 1), float("-inf")),
    "nan-in-h0": ({}, "h0", (0, 2, 5), float("nan")),
    "inf-in-c0": ({}, "c0", (0, 0, 7), float("inf")),
    "nan-in-weight_hh": ({}, "weight_hh_l0", (3, 4), float("nan")),
    "nan-in-input-2-layers-bidirectional": (dict(num_layers=2, bidirectional=True), "input", (2, 1, 0), float("nan")),
}


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("case", list(NONFINITE))
def test_nan_and_inf_poison_the_same_outputs_as_nn_lstm(case, fusion):
    """A non-finite value reaches exactly the outputs it reaches in nn.LSTM (same NaN/inf
    pattern; the other values still match)."""
    kwargs, where, index, value = NONFINITE[case]
    ours, ref = make_pair(5, 12, fusion=fusion, **kwargs)
    D, L = (2 if kwargs.get("bidirectional") else 1), kwargs.get("num_layers", 1)
    x, h0, c0 = randn(4, 3, 5, seed=1), randn(L * D, 3, 12, seed=2), randn(L * D, 3, 12, seed=3)
    xr, h0r, c0r = x.double(), h0.double(), c0.double()
    _poke(where, index, value)(x, h0, c0, ours)
    _poke(where, index, value)(xr, h0r, c0r, ref)
    out, ref_out = ours(x, (h0, c0)), ref(xr, (h0r, c0r))
    for name, a, e in zip(("output", "h_n", "c_n"), (out[0], *out[1]), (ref_out[0], *ref_out[1])):
        assert_same_nonfinite(name, a, e)


# ---------------------------------------------------------------------------------------------
# dtype / device conversions
# ---------------------------------------------------------------------------------------------

def test_double_module_with_triton_backend_raises_a_clear_error():
    """float64 has no Triton kernel: the error names the dtype and what to use instead."""
    ours = ours_cls(5, 6, device=DEVICE).double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    err = raised(lambda: ours(torch.zeros(3, 2, 5, dtype=torch.float64, device=DEVICE)))
    message = str(err)
    assert isinstance(err, (ValueError, TypeError, NotImplementedError)) and "\n" not in message
    assert "float64" in message, message
    assert "backend='torch'" in message or "backend='auto'" in message, message


def test_double_module_with_auto_backend_runs_torchs_kernel():
    torch.manual_seed(0)
    ours = lstm_triton.LSTM(5, 6, num_layers=2, device=DEVICE).double()
    ref = nn.LSTM(5, 6, num_layers=2, device=DEVICE).double()
    ref.load_state_dict(ours.state_dict())
    leaves = [randn(3, 2, 5, seed=1, dtype=torch.float64).requires_grad_()]
    compare_forward_backward(ours, ref, leaves, tol=1e-12)


@pytest.mark.parametrize("fusion", LEVELS)
@pytest.mark.parametrize("convert", ["half", "to-float16"])
def test_half_conversion_keeps_the_module_working(convert, fusion):
    """``.half()`` / ``.to(torch.float16)`` convert every parameter in place (same module, flat
    weights updated); fp16 input then gives fp16 output close (≤ 1e-2) to float64 on the same
    fp16-rounded weights; ``.float()`` goes back to fp32 results."""
    ours, _ = make_pair(5, 6, fusion=fusion)
    same = ours.half() if convert == "half" else ours.to(torch.float16)
    assert same is ours
    assert all(p.dtype == torch.float16 for p in ours.parameters())
    assert all(w.dtype == torch.float16 for w in ours._flat_weights)
    ref = nn.LSTM(5, 6, device=DEVICE).double()
    ref.load_state_dict(ours.state_dict())
    x = randn(3, 2, 5, seed=1).half()
    compare_forward_backward(ours, ref, [x.requires_grad_()], tol=1e-2)
    ours.float()
    ours.zero_grad()
    ref.zero_grad()
    x32 = x.detach().float().requires_grad_()
    compare_forward_backward(ours, ref, [x32], tol=TOL)


def test_to_same_device_and_dtype_returns_the_module():
    ours, ref = make_pair(5, 6)
    assert ours.to(DEVICE) is ours and ours.to(torch.float32) is ours and ours.float() is ours
    assert all(w is p for w, p in zip(ours._flat_weights, ours.parameters()))
    x = randn(3, 2, 5, seed=1)
    assert_close("output", ours(x)[0], ref(x.double())[0])


# ---------------------------------------------------------------------------------------------
# repr
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    pytest.param({}, id="defaults"),
    pytest.param(dict(num_layers=2, bias=False, batch_first=True, dropout=0.5, bidirectional=True), id="all-set"),
    pytest.param(dict(proj_size=3), id="proj_size"),
])
def test_repr_extends_nn_lstm_repr(kwargs):
    """nn.LSTM's extra_repr first, then only our own options, naming the non-default ones."""
    ref, ours = nn.LSTM(5, 7, **kwargs), ours_cls(5, 7, fusion="step", **kwargs)
    assert ours.extra_repr().startswith(ref.extra_repr())
    extra = ours.extra_repr()[len(ref.extra_repr()):]
    assert re.fullmatch(r"(, (fusion|backend)='\w+')*", extra), extra
    assert "fusion='step'" in extra and "backend='triton'" in extra, extra
    assert repr(ours) == f"LSTM({ours.extra_repr()})"
