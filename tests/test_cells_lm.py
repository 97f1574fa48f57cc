"""The char LM with every cell: same weights and trajectory for naive and nn, states, the Triton slot."""

import pytest
import torch
from torch import nn

import lstm_triton
from lstm_triton.charlm.impls import build_char_lm, layer_from_weights, portable_state_dict
from lstm_triton.charlm.model import detach_state, predict

from .helpers import char_lm_losses, max_rel_diff, rel_err

CELLS = {"gru": ("gru", "tanh"), "rnn-tanh": ("rnn", "tanh"), "rnn-relu": ("rnn", "relu")}


@pytest.mark.parametrize("cell,nonlinearity", CELLS.values(), ids=CELLS.keys())
def test_same_seed_same_function_for_naive_and_nn(cell, nonlinearity):
    kw = dict(seed=5, cell=cell, nonlinearity=nonlinearity)
    naive, ref = build_char_lm("naive", 28, 16, **kw), build_char_lm("nn", 28, 16, **kw)
    other = build_char_lm("nn", 28, 16, **{**kw, "seed": 6})
    x = torch.randint(0, 28, (3, 7))
    h0 = torch.randn(1, 3, 16)
    (out, h), (ref_out, ref_h) = naive(x, h0), ref(x, h0)
    assert rel_err(out, ref_out) <= 1e-5 and rel_err(h, ref_h) <= 1e-5
    assert rel_err(other(x, h0)[0], ref_out) > 1e-3  # the seed matters


def _trained(impl, cell, nonlinearity, train_bias_hh=False):
    """20 SGD steps (tests/helpers.py); returns the losses and the trained model."""
    models = []

    def prepare(model):
        if train_bias_hh:
            model.rnn.bias_hh_l0.requires_grad_(True)
        models.append(model)

    losses = char_lm_losses(impl, cell=cell, nonlinearity=nonlinearity, prepare=prepare)
    return losses, models[0]


@pytest.mark.parametrize("cell,nonlinearity", CELLS.values(), ids=CELLS.keys())
def test_naive_and_nn_train_the_same_for_20_steps(cell, nonlinearity):
    """Same converted weights, same batches: losses agree to 1e-4 and so do the trained weights
    (in nn's layout); the nn layer's frozen bias_hh is still exactly zero."""
    naive_losses, naive = _trained("naive", cell, nonlinearity)
    ref_losses, ref = _trained("nn", cell, nonlinearity)
    assert ref_losses[-1] < ref_losses[0]  # it trained
    assert max_rel_diff(naive_losses, ref_losses) <= 1e-4
    assert not ref.rnn.bias_hh_l0.any()
    naive_w, ref_w = portable_state_dict(naive), portable_state_dict(ref)
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "linear.weight", "linear.bias"):
        assert rel_err(naive_w[name], ref_w[name]) <= 1e-5, name


@pytest.mark.parametrize("cell,nonlinearity", CELLS.values(), ids=CELLS.keys())
def test_training_bias_hh_too_would_train_another_model(cell, nonlinearity):
    """Why bias_hh stays frozen with the seed's init: trained as well, the nn layer's effective
    biases move about twice as fast as d2l's single bias (and the GRU grows a b_hn d2l lacks)."""
    _, naive = _trained("naive", cell, nonlinearity)
    _, both = _trained("nn", cell, nonlinearity, train_bias_hh=True)
    naive_w = portable_state_dict(naive)
    effective = both.rnn.bias_ih_l0.detach().clone()
    H = both.rnn.hidden_size
    summed = slice(0, 2 * H) if cell == "gru" else slice(0, H)  # GRU's n block: b_hn stays apart
    effective[summed] += both.rnn.bias_hh_l0.detach()[summed]
    assert rel_err(effective[summed], naive_w["rnn.bias_ih_l0"][summed]) > 0.2
    if cell == "gru":
        assert both.rnn.bias_hh_l0[2 * H:].abs().max() > 0


@pytest.mark.parametrize("cell,nonlinearity,hidden", [("lstm", "tanh", 256), ("gru", "tanh", 256),
                                                       ("rnn", "tanh", 512), ("rnn", "relu", 512)],
                         ids=["lstm", "gru", "rnn-tanh", "rnn-relu"])
def test_cell_layers_states_and_d2l_hidden_size(cell, nonlinearity, hidden):
    """Default hidden size is d2l's chapter's; GRU/RNN states are one tensor, the LSTM's a pair."""
    for impl, kind in (("naive", "Naive"), ("nn", "")):
        model = build_char_lm(impl, 28, cell=cell, nonlinearity=nonlinearity)
        assert model.hidden_size == hidden and type(model.rnn).__name__.startswith(kind)
        assert model.mode == (cell if cell != "rnn" else f"rnn_{nonlinearity}")
        state = model.begin_state(2, "cpu")
        if cell == "lstm":
            assert isinstance(state, tuple) and [tuple(s.shape) for s in state] == [(1, 2, hidden)] * 2
        else:
            assert isinstance(state, torch.Tensor) and tuple(state.shape) == (1, 2, hidden)
        _, out_state = model(torch.randint(0, 28, (2, 3)), state)
        assert type(detach_state(out_state)) is type(state)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_predict_continues_the_prefix(cell):
    from lstm_triton.charlm.data import CharData

    vocab = CharData.load(4, 5, 200, 0, False).vocab
    model = build_char_lm("naive", len(vocab), 8, cell=cell)
    text = predict(model, "time traveller", 7, vocab)
    assert text.startswith("time traveller") and len(text) == len("time traveller") + 7


BAD = {
    "unknown cell": (dict(cell="lstm2"), "cell must be one of"),
    "relu on gru": (dict(cell="gru", nonlinearity="relu"), "nonlinearity applies to cell 'rnn' only"),
    "unknown nonlinearity": (dict(cell="rnn", nonlinearity="sigmoid"), "nonlinearity must be one of"),
}


@pytest.mark.parametrize("kwargs,needle", BAD.values(), ids=BAD.keys())
def test_bad_cell_arguments_are_one_line_value_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as info:
        build_char_lm("nn", 28, 8, **kwargs)
    assert "\n" not in str(info.value)


def test_layer_from_weights_refuses_weights_of_another_cell():
    with pytest.raises(ValueError, match="weight_ih_l0 has 32 rows, a gru layer of hidden size 8 has 24"):
        layer_from_weights("nn", nn.LSTM(5, 8).state_dict(), cell="gru")


@pytest.mark.parametrize("cell,nonlinearity,name", [("gru", "tanh", "GRU"), ("rnn", "relu", "RNN")],
                         ids=["gru", "rnn-relu"])
def test_impl_triton_builds_the_triton_layer(cell, nonlinearity, name):
    """impl 'triton' builds lstm_triton.GRU / RNN with the backend forced to triton, the fusion
    passed on, the RNN's nonlinearity too, and d2l's frozen recurrent bias."""
    model = build_char_lm("triton", 28, 8, cell=cell, nonlinearity=nonlinearity, fusion="step")
    assert type(model.rnn) is getattr(lstm_triton, name)
    assert model.rnn.backend == "triton" and model.rnn.fusion == "step"
    assert model.mode == model.rnn.mode.lower() and not model.rnn.bias_hh_l0.requires_grad
