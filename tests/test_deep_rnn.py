"""Deep RNNs (issue 19, part 3): ``num_layers`` for every implementation, d2l §9.3's stacked scratch
layers as the naive baseline, from one draw of weights converted exactly."""

import pytest
import torch

from lstm_triton.charlm.checkpoint import CheckpointError
from lstm_triton.charlm.cli import main
from lstm_triton.charlm.impls import build_char_lm, load_portable_state_dict, portable_state_dict
from lstm_triton.charlm.naive import NaiveLSTM
from lstm_triton.charlm.naive_cells import NaiveGRU, NaiveRNN, from_nn_weights, to_nn_weights
from lstm_triton.charlm.naive_stack import NaiveStack
from lstm_triton.charlm.train import TrainConfig, Trainer

from .helpers import DEVICE, char_lm_losses, max_rel_diff, rel_err

CELLS = ["lstm", "gru", "rnn"]
TINY = dict(hidden_size=16, batch_size=4, num_steps=6, max_tokens=100, val_tokens=0)
CLI_TINY = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "6", "--max-tokens", "100",
            "--val-tokens", "0", "--no-progress", "--num-preds", "3", "--epochs", "1"]


def _scale_up(model):
    """Every weight × 30 (std 0.3). At the seed's 0.01 the logits are ~1e-4 and every loss is
    log(28) to six digits whatever the recurrent layers compute: a comparison there cannot fail
    (a 1-layer and a 2-layer model agree to 1e-5). Scaled, they differ by 1e-2 after 20 steps."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30.0)


@pytest.mark.parametrize("cell", CELLS)
def test_two_layer_naive_and_nn_train_alike(cell):
    """d2l's stacked scratch layers and nn's num_layers=2 layer: same 20 SGD steps (≤ 1e-4)."""
    naive = char_lm_losses("naive", cell=cell, hidden=16, num_layers=2, seq_len=6, prepare=_scale_up)
    ref = char_lm_losses("nn", cell=cell, hidden=16, num_layers=2, seq_len=6, prepare=_scale_up)
    assert max_rel_diff(naive, ref) <= 1e-4, (naive, ref)


def test_two_layer_triton_lstm_computes_nn_values_and_gradients():
    """One level (persistent) of the interpreted kernels: a forward and backward of the 2-layer char
    LM against nn's, same weights (its training is the nn one's once these agree)."""
    tokens = torch.randint(0, 28, (2, 3), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    results = []
    for impl in ("triton", "nn"):
        model = build_char_lm(impl, 28, 16, num_layers=2, fusion="persistent", device=DEVICE)
        _scale_up(model)
        logits, (h, c) = model(tokens, model.begin_state(2, DEVICE))
        (logits.sin().sum() + h.sum() + c.sum()).backward()
        assert h.shape == (2, 2, 16)
        results.append([logits, h, c] + [p.grad for p in model.parameters() if p.requires_grad])
    errors = [rel_err(a, b) for a, b in zip(*results)]
    assert max(errors) <= 1e-5, errors


def test_the_weights_are_drawn_in_d2ls_deep_rnn_order():
    """d2l's StackedRNNScratch builds layer 0 (vocabulary inputs), then layer 1 (hidden inputs), each
    drawing its own parameters; the output layer (RNNLMScratch) draws after them."""
    model = build_char_lm("naive", 28, 8, seed=4, num_layers=2)
    torch.manual_seed(4)
    layers = [NaiveLSTM(28, 8), NaiveLSTM(8, 8)]
    torch.nn.Linear(8, 28)  # build_char_lm's head module draws torch's init first (then overwritten)
    w_hq = torch.randn(8, 28) * 0.01
    for k, layer in enumerate(layers):
        for name, p in layer.named_parameters():
            assert torch.equal(getattr(model.rnn.layers[k], name), p), (k, name)
    assert torch.equal(model.linear.weight, w_hq.T)
    first = build_char_lm("naive", 28, 8, seed=4, num_layers=1)  # layer 0 is drawn first either way
    assert torch.equal(first.rnn.W_xi, model.rnn.layers[0].W_xi)


@pytest.mark.parametrize("cell", CELLS)
def test_two_layer_weights_convert_exactly_both_ways(cell):
    naive = build_char_lm("naive", 28, 8, seed=2, cell=cell, num_layers=2)
    ref = build_char_lm("nn", 28, 8, seed=2, cell=cell, num_layers=2)
    weights = to_nn_weights(naive.rnn)
    assert sorted(weights) == sorted(ref.rnn.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in ref.rnn.state_dict().items())
    back = from_nn_weights(naive.mode, weights)
    assert isinstance(back, NaiveStack) and back.num_layers == 2
    for (name, p), q in zip(naive.rnn.named_parameters(), back.parameters()):
        assert torch.equal(p, q), name
    # portable checkpoints: trained-looking nn weights into a naive model and back, bit for bit (the
    # seed's bias_hh stays zero in training: d2l's one bias per gate lives in bias_ih)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if not name.startswith("rnn.bias_hh"):
                p.normal_()
    state = portable_state_dict(ref)
    load_portable_state_dict(naive, state)
    again = portable_state_dict(naive)
    assert sorted(again) == sorted(state) and all(torch.equal(again[k], state[k]) for k in state)


def test_a_stack_refuses_bad_layers_states_and_weights():
    with pytest.raises(ValueError, match="layer 1 reads 5 inputs"):
        NaiveStack([NaiveRNN(3, 4), NaiveRNN(5, 4)])
    with pytest.raises(ValueError, match="layer 1 is a GRU"):
        NaiveStack([NaiveRNN(3, 4), NaiveGRU(4, 4)])
    stack = NaiveStack([NaiveRNN(3, 4), NaiveRNN(4, 4)])
    with pytest.raises(ValueError, match=r"state must be a \(2, 5, 4\)"):
        stack(torch.randn(2, 5, 3), torch.zeros(1, 5, 4))
    before = [p.clone() for p in stack.parameters()]
    with pytest.raises(ValueError, match="hold 3 layer"):
        from_nn_weights("rnn_tanh", torch.nn.RNN(3, 4, num_layers=3).state_dict(), stack)
    with pytest.raises(ValueError, match="hold 1 layer"):
        from_nn_weights("rnn_tanh", torch.nn.RNN(3, 4).state_dict(), stack)
    assert all(torch.equal(p, b) for p, b in zip(stack.parameters(), before))
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        build_char_lm("nn", 28, 8, num_layers=0)


def test_resume_with_another_num_layers_is_refused(tmp_path):
    two = Trainer(TrainConfig(impl="nn", epochs=1, num_layers=2, **TINY), "cpu")
    two.save(tmp_path / "two.ckpt")
    one = Trainer(TrainConfig(impl="nn", epochs=1, **TINY), "cpu")
    with pytest.raises(CheckpointError, match=r"2-layer model, this run trains 1 \(check --num-layers\)"):
        one.resume(tmp_path / "two.ckpt")
    # a checkpoint from before num_layers existed (no such key) is a 1-layer one
    one.save(tmp_path / "one.ckpt")
    payload = torch.load(tmp_path / "one.ckpt", weights_only=False)
    del payload["config"]["num_layers"]
    torch.save(payload, tmp_path / "old.ckpt")
    Trainer(TrainConfig(impl="naive", epochs=1, **TINY), "cpu").resume(tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="--num-layers"):
        two.resume(tmp_path / "old.ckpt")


def test_cli_trains_two_layers_and_refuses_a_checkpoint_of_one(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert main(["train", *CLI_TINY, "--impl", "naive", "--num-layers", "2", "--save", str(ckpt)]) == 0
    saved = torch.load(ckpt, weights_only=False)
    assert saved["config"]["num_layers"] == 2 and "rnn.weight_hh_l1" in saved["model"]
    capsys.readouterr()
    before = ckpt.read_bytes()
    code = main(["train", *CLI_TINY, "--epochs", "2", "--resume", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 2 and "--num-layers" in err and len(err.strip().splitlines()) == 1, err
    assert ckpt.read_bytes() == before
