import torch
from torch import nn

from lstm_triton.charlm.naive import NaiveLSTM, from_nn_lstm, to_nn_lstm

from .helpers import char_lm_losses, max_rel_diff, rel_err


def _pair(input_size=5, hidden=20, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    naive = NaiveLSTM(input_size, hidden, dtype=dtype)
    ref = nn.LSTM(input_size, hidden, dtype=dtype)
    ref.load_state_dict(to_nn_lstm(naive))
    return naive, ref


def test_seed_initialisation():
    torch.manual_seed(0)
    layer = NaiveLSTM(28, 256)
    assert layer.W_xi.shape == (28, 256) and layer.W_hc.shape == (256, 256) and layer.b_o.shape == (256,)
    assert 0.008 < float(layer.W_hf.detach().std()) < 0.012 and float(layer.b_f.detach().abs().max()) == 0.0


def test_conversion_round_trip_is_exact():
    naive, _ = _pair()
    back = from_nn_lstm(to_nn_lstm(naive))
    for name, p in naive.named_parameters():
        assert torch.equal(p, getattr(back, name)), name


def test_conversion_puts_gates_in_nn_row_order():
    naive, _ = _pair(hidden=3)
    w = to_nn_lstm(naive)["weight_ih_l0"]
    assert torch.equal(w[0:3], naive.W_xi.T) and torch.equal(w[3:6], naive.W_xf.T)
    assert torch.equal(w[6:9], naive.W_xc.T) and torch.equal(w[9:12], naive.W_xo.T)


def test_nn_to_naive_sums_the_two_biases():
    ref = nn.LSTM(4, 6)
    naive = from_nn_lstm(ref.state_dict())
    total = ref.bias_ih_l0 + ref.bias_hh_l0
    assert torch.equal(naive.b_f, total[6:12]) and torch.equal(naive.b_o, total[18:24])


def test_naive_matches_nn_lstm_forward_and_backward():
    torch.manual_seed(1)
    naive, ref = _pair(input_size=5, hidden=20)
    naive64, ref64 = from_nn_lstm({k: v.double() for k, v in to_nn_lstm(naive).items()}), ref.double()
    x = torch.randn(7, 3, 5)
    h0, c0 = torch.randn(1, 3, 20), torch.randn(1, 3, 20)
    for layer, dt in ((naive, torch.float32), (naive64, torch.float64)):
        xr = x.to(dt).requires_grad_()
        out, (h, c) = layer(xr, (h0.to(dt), c0.to(dt)))
        ref_out, (rh, rc) = ref64(x.double(), (h0.double(), c0.double()))
        tol = 1e-5 if dt == torch.float32 else 1e-12
        assert rel_err(out, ref_out) <= tol and rel_err(h, rh) <= tol and rel_err(c, rc) <= tol


def test_naive_and_nn_train_the_same_for_20_steps():
    """Same converted weights, same batches: the char-LM losses agree to 1e-4 relative."""
    naive, ref = char_lm_losses("naive"), char_lm_losses("nn")
    assert ref[-1] < ref[0]  # it trained
    assert max_rel_diff(naive, ref) <= 1e-4
