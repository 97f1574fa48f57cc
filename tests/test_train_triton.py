"""Training with the Triton kernels: same losses as nn.LSTM from identical weights, and the CLI."""

import pytest

from lstm_triton.charlm.cli import main

from .helpers import DEVICE, char_lm_losses, max_rel_diff


@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
def test_triton_char_lm_trains_like_nn_lstm_for_20_steps(fusion):
    ours, ref = char_lm_losses("triton", fusion=fusion, device=DEVICE), char_lm_losses("nn")
    assert ref[-1] < ref[0]
    assert max_rel_diff(ours, ref) <= 1e-4, (ours - ref).abs().max()


def test_cli_trains_with_triton(capsys, tmp_path):
    # the command's plumbing, at the smallest size that still trains and validates (the training itself
    # is the tests above; 2 epochs on 300 tokens took 36 s of make test's CPU)
    args = ["train", "--impl", "triton", "--fusion", "step", "--epochs", "1", "--hidden-size", "16",
            "--batch-size", "4", "--num-steps", "6", "--max-tokens", "100", "--val-tokens", "50",
            "--no-progress", "--num-preds", "3", "--metrics-csv", str(tmp_path / "m.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("perplexity ")


# relu is the tanh RNN's kernels with another compile-time activation: one level of it is enough here
# (its parity at every level is tests/test_gru_rnn.py's)
@pytest.mark.parametrize("cell, nonlinearity, fusion", [
    pytest.param(cell, nonlinearity, fusion, id=f"{name}-{fusion}")
    for cell, nonlinearity, name in (("gru", "tanh", "gru"), ("rnn", "tanh", "rnn-tanh"), ("rnn", "relu", "rnn-relu"))
    for fusion in (("persistent",) if nonlinearity == "relu" else ("cell", "step", "persistent"))])
def test_triton_gru_and_rnn_char_lms_train_like_nn_and_naive_for_20_steps(cell, nonlinearity, fusion):
    """Issue 11's acceptance: from identical weights, naive, nn and each Triton level give the same
    20-step losses (≤ 1e-4 relative) for GRU and the plain RNN."""
    kwargs = dict(cell=cell, nonlinearity=nonlinearity)
    ours = char_lm_losses("triton", fusion=fusion, device=DEVICE, **kwargs)
    ref, naive = char_lm_losses("nn", **kwargs), char_lm_losses("naive", **kwargs)
    assert ref[-1] < ref[0]
    assert max_rel_diff(ours, ref) <= 1e-4, (ours - ref).abs().max()
    assert max_rel_diff(naive, ref) <= 1e-4, (naive - ref).abs().max()
