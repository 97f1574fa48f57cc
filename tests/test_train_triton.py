"""Training with the Triton kernels: same losses as nn.LSTM from identical weights, and the CLI."""

import pytest

from lstm_triton.cli import main

from .helpers import DEVICE, char_lm_losses, max_rel_diff


@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
def test_triton_char_lm_trains_like_nn_lstm_for_20_steps(fusion):
    ours, ref = char_lm_losses("triton", fusion=fusion, device=DEVICE), char_lm_losses("nn")
    assert ref[-1] < ref[0]
    assert max_rel_diff(ours, ref) <= 1e-4, (ours - ref).abs().max()


def test_cli_trains_with_triton(capsys, tmp_path):
    args = ["train", "--impl", "triton", "--fusion", "step", "--epochs", "2", "--hidden-size", "16",
            "--batch-size", "4", "--num-steps", "6", "--max-tokens", "300", "--val-tokens", "100",
            "--no-progress", "--num-preds", "3", "--metrics-csv", str(tmp_path / "m.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("perplexity ")
