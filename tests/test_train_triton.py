"""Training with the Triton kernels: same losses as nn.LSTM from identical weights, and the CLI."""

import pytest

from lstm_triton.charlm.cli import main

from .helpers import DEVICE, char_lm_losses, max_rel_diff


# The LSTM trains here at the persistent level, the one auto picks at the d2l shape and the longest
# code path. Its cell and step levels train the char LM in make test too: the tiny benchmark's
# end-to-end runs (tests/test_bench_report.py) train every level and hold each to nn's perplexity
# within 1%, and every level matches float64 nn forward and in every gradient (test_lstm_triton.py);
# 20 steps at those two levels here cost make test 45 CPU-seconds more.
@pytest.mark.parametrize("fusion", ["persistent"])
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


# GRU and RNN train at the persistent level, the one auto picks at the d2l shape and the longest code
# path. Their cell and step levels are the LSTM's loops with another compile-time cell: the loops
# train like nn above (LSTM, every level) and the cells match float64 nn at every level, forward and
# every gradient (tests/test_gru_rnn.py); training them here too cost 70 s of make test's CPU.
@pytest.mark.parametrize("cell, nonlinearity", [("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")],
                         ids=["gru", "rnn-tanh", "rnn-relu"])
def test_triton_gru_and_rnn_char_lms_train_like_nn_and_naive_for_20_steps(cell, nonlinearity):
    """Issue 11's acceptance: from identical weights, naive, nn and the Triton layer give the same
    20-step losses (≤ 1e-4 relative) for GRU and the plain RNN."""
    fusion = "persistent"
    kwargs = dict(cell=cell, nonlinearity=nonlinearity)
    ours = char_lm_losses("triton", fusion=fusion, device=DEVICE, **kwargs)
    ref, naive = char_lm_losses("nn", **kwargs), char_lm_losses("naive", **kwargs)
    assert ref[-1] < ref[0]
    assert max_rel_diff(ours, ref) <= 1e-4, (ours - ref).abs().max()
    assert max_rel_diff(naive, ref) <= 1e-4, (naive - ref).abs().max()
