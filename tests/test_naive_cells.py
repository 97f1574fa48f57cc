"""d2l's scratch GRU and RNN: d2l's parameters and init, exact conversion to and from nn.GRU / nn.RNN."""

import pytest
import torch
from torch import nn

from lstm_triton.charlm.naive_cells import (
    NaiveGRU,
    NaiveRNN,
    from_nn_gru,
    from_nn_rnn,
    from_nn_weights,
    to_nn_gru,
    to_nn_rnn,
    to_nn_weights,
)

from .helpers import rel_err

CELLS = {  # id -> (naive factory, nn factory)
    "gru": (lambda i, h, **kw: NaiveGRU(i, h, **kw), lambda i, h, **kw: nn.GRU(i, h, **kw)),
    "rnn-tanh": (lambda i, h, **kw: NaiveRNN(i, h, "tanh", **kw),
                 lambda i, h, **kw: nn.RNN(i, h, nonlinearity="tanh", **kw)),
    "rnn-relu": (lambda i, h, **kw: NaiveRNN(i, h, "relu", **kw),
                 lambda i, h, **kw: nn.RNN(i, h, nonlinearity="relu", **kw)),
}


def test_gru_has_d2l_parameters_drawn_in_d2l_order():
    """gru_scratch's three(): (W_x*, W_h*, b_*) for z, r, h in that order, randn * 0.01, zero biases."""
    torch.manual_seed(0)
    layer = NaiveGRU(5, 4)
    torch.manual_seed(0)
    expected = {}
    for g in ("z", "r", "h"):
        expected[f"W_x{g}"] = torch.randn(5, 4) * 0.01
        expected[f"W_h{g}"] = torch.randn(4, 4) * 0.01
        expected[f"b_{g}"] = torch.zeros(4)
    assert [name for name, _ in layer.named_parameters()] == list(expected)
    for name, value in expected.items():
        assert torch.equal(getattr(layer, name), value), name


def test_rnn_has_d2l_parameters_drawn_in_d2l_order():
    torch.manual_seed(0)
    layer = NaiveRNN(5, 4)
    torch.manual_seed(0)
    w_xh, w_hh = torch.randn(5, 4) * 0.01, torch.randn(4, 4) * 0.01
    assert [name for name, _ in layer.named_parameters()] == ["W_xh", "W_hh", "b_h"]
    assert torch.equal(layer.W_xh, w_xh) and torch.equal(layer.W_hh, w_hh) and not layer.b_h.any()


def _reference(ref: nn.Module, x, h0):
    out, h = ref.double()(x.double(), h0.double())
    return out, h


@pytest.mark.parametrize("cell", CELLS, ids=CELLS.keys())
def test_naive_matches_nn_forward_and_backward_in_fp32(cell):
    """Odd shapes (T=7, B=3, I=5, H=20), random h0 and upstream gradients; float64 nn reference."""
    make_naive, make_nn = CELLS[cell]
    torch.manual_seed(1)
    naive = make_naive(5, 20)
    with torch.no_grad():  # nonzero biases, so a bias in the wrong place cannot hide
        for name, p in naive.named_parameters():
            if name.startswith("b_"):
                p.normal_()
    ref = make_nn(5, 20)
    ref.load_state_dict(to_nn_weights(naive))
    x, h0 = torch.randn(7, 3, 5, requires_grad=True), torch.randn(1, 3, 20, requires_grad=True)
    x64, h064 = x.detach().double().requires_grad_(), h0.detach().double().requires_grad_()
    out, h = naive(x, h0)
    ref_out, ref_h = ref.double()(x64, h064)
    d_out, d_h = torch.randn_like(ref_out), torch.randn_like(ref_h)
    (out * d_out.float()).sum().add_((h * d_h.float()).sum()).backward()
    (ref_out * d_out).sum().add_((ref_h * d_h).sum()).backward()
    assert rel_err(out, ref_out) <= 1e-5 and rel_err(h, ref_h) <= 1e-5
    assert rel_err(x.grad, x64.grad) <= 1e-5 and rel_err(h0.grad, h064.grad) <= 1e-5
    grads = make_naive(5, 20)  # the naive gradients, mapped to nn's layout by the same conversion
    with torch.no_grad():
        for name, p in naive.named_parameters():
            getattr(grads, name).copy_(p.grad)
    mapped = to_nn_weights(grads)
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"):
        assert rel_err(mapped[name], getattr(ref, name).grad) <= 1e-5, name


def test_gru_reset_gate_multiplies_the_recurrent_product_as_in_pytorch():
    """d2l's text form tanh(X W_xh + (R ⊙ H) W_hh + b_h) is another function: no conversion could
    make it equal nn.GRU, which is why the naive GRU computes R ⊙ (H W_hh) (module docstring)."""
    torch.manual_seed(2)
    layer = NaiveGRU(3, 8)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x, h = torch.randn(1, 2, 3), torch.randn(1, 2, 8)
    out, _ = layer(x, h)
    p, X, H = layer, x[0], h[0]
    Z = torch.sigmoid(X @ p.W_xz + H @ p.W_hz + p.b_z)
    R = torch.sigmoid(X @ p.W_xr + H @ p.W_hr + p.b_r)
    d2l_text = Z * H + (1 - Z) * torch.tanh(X @ p.W_xh + (R * H) @ p.W_hh + p.b_h)
    pytorch_form = Z * H + (1 - Z) * torch.tanh(X @ p.W_xh + p.b_h + R * (H @ p.W_hh))
    assert rel_err(out[0], pytorch_form) <= 1e-6 and rel_err(out[0], d2l_text) > 1e-2


@pytest.mark.parametrize("cell", CELLS, ids=CELLS.keys())
def test_naive_to_nn_to_naive_round_trip_is_exact(cell):
    torch.manual_seed(3)
    naive = CELLS[cell][0](4, 6)
    back = from_nn_weights(naive.mode.lower(), to_nn_weights(naive))
    assert type(back) is type(naive) and back.mode == naive.mode
    for name, p in naive.named_parameters():
        assert torch.equal(p, getattr(back, name)), name


def test_gru_conversion_puts_gates_in_nn_row_order():
    torch.manual_seed(4)
    naive = NaiveGRU(2, 3)
    w = to_nn_gru(naive)
    assert torch.equal(w["weight_ih_l0"][0:3], naive.W_xr.T) and torch.equal(w["weight_ih_l0"][3:6], naive.W_xz.T)
    assert torch.equal(w["weight_hh_l0"][6:9], naive.W_hh.T) and not w["bias_hh_l0"].any()


@pytest.mark.parametrize("cell", CELLS, ids=CELLS.keys())
def test_nn_default_init_converts_to_the_same_function(cell):
    """nn's own init has nonzero bias_hh everywhere: r/z/RNN biases are summed, the GRU's n-gate
    recurrent bias becomes b_hn; outputs agree and converting back gives the same function."""
    torch.manual_seed(5)
    make_naive, make_nn = CELLS[cell]
    ref = make_nn(4, 6)
    b_hn = ref.bias_hh_l0[12:].detach().clone()
    nonlinearity = getattr(ref, "nonlinearity", None)
    naive = from_nn_gru(ref.state_dict()) if cell == "gru" else from_nn_rnn(ref.state_dict(), None, nonlinearity)
    again = make_nn(4, 6)
    again.load_state_dict(to_nn_weights(naive))
    x, h0 = torch.randn(5, 2, 4), torch.randn(1, 2, 6)
    expected = ref.double()(x.double(), h0.double())[0]
    assert rel_err(naive(x, h0)[0], expected) <= 1e-5 and rel_err(again(x, h0)[0], expected) <= 1e-5
    if cell == "gru":
        assert naive.recurrent_bias and torch.equal(naive.b_hn, b_hn)


def test_gru_refuses_a_recurrent_bias_it_cannot_hold():
    ref = nn.GRU(4, 6)  # nonzero b_hn
    with pytest.raises(ValueError, match="recurrent_bias=True"):
        from_nn_gru(ref.state_dict(), NaiveGRU(4, 6))
    assert from_nn_gru(ref.state_dict(), NaiveGRU(4, 6, recurrent_bias=True)).recurrent_bias


def test_rnn_conversion_keeps_the_given_layers_nonlinearity_or_refuses():
    state = to_nn_rnn(NaiveRNN(3, 4, "relu"))
    assert from_nn_rnn(state, NaiveRNN(3, 4, "relu")).nonlinearity == "relu"
    assert from_nn_rnn(state, None, "relu").mode == "RNN_RELU"
    with pytest.raises(ValueError, match="nonlinearity 'tanh' does not match"):
        from_nn_rnn(state, NaiveRNN(3, 4, "relu"), "tanh")


BAD = {
    "gru-input-width": (lambda: NaiveGRU(5, 4)(torch.zeros(2, 3, 6)), "input must be"),
    "gru-tuple-state": (lambda: NaiveGRU(5, 4)(torch.zeros(2, 3, 5), (torch.zeros(1, 3, 4),) * 2), "state must be"),
    "rnn-state-batch": (lambda: NaiveRNN(5, 4)(torch.zeros(2, 3, 5), torch.zeros(1, 2, 4)), "state must be"),
    "rnn-nonlinearity": (lambda: NaiveRNN(5, 4, "sigmoid"), "nonlinearity"),
    "gru-zero-hidden": (lambda: NaiveGRU(5, 0), "hidden_size"),
    "lstm-weights-as-gru": (lambda: from_nn_weights("gru", nn.LSTM(3, 4).state_dict()), "do not fit"),
    "unknown-mode": (lambda: from_nn_weights("rnn", nn.RNN(3, 4).state_dict()), "mode must be"),
    "shape-mismatch": (lambda: from_nn_gru(nn.GRU(3, 4).state_dict(), NaiveGRU(3, 5, recurrent_bias=True)),
                       "shape mismatch"),
}


@pytest.mark.parametrize("call,needle", BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_one_line_value_error(call, needle):
    with pytest.raises(ValueError, match=needle) as info:
        call()
    assert "\n" not in str(info.value)
