"""Training, checkpoints and the command line with --cell gru / rnn."""

import pytest
import torch

from lstm_triton.charlm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lstm_triton.charlm.cli import main
from lstm_triton.charlm.train import TrainConfig, Trainer

SMALL = dict(hidden_size=16, batch_size=4, num_steps=8, max_tokens=600, val_tokens=200)
TINY = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "8", "--max-tokens", "600",
        "--val-tokens", "200", "--no-progress", "--num-preds", "5"]


def test_config_defaults_are_d2l_per_cell():
    assert TrainConfig().cell == "lstm" and TrainConfig().hidden_size == 256
    assert TrainConfig(cell="gru").hidden_size == 256 and TrainConfig(cell="rnn").hidden_size == 512
    assert TrainConfig(cell="rnn", hidden_size=64).hidden_size == 64
    cfg = TrainConfig(cell="rnn", nonlinearity="relu")
    assert (cfg.mode, cfg.lr, cfg.epochs, cfg.batch_size, cfg.num_steps) == ("rnn_relu", 1.0, 500, 32, 35)


@pytest.mark.parametrize("field,value,needle", [
    ("cell", "transformer", "cell must be one of"),
    ("nonlinearity", "relu", "nonlinearity applies to cell 'rnn' only"),
], ids=["unknown-cell", "relu-on-lstm"])
def test_config_rejects_bad_cells(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("impl,cell,nonlinearity", [
    ("naive", "gru", "tanh"), ("nn", "gru", "tanh"), ("nn", "rnn", "tanh"), ("naive", "rnn", "relu"),
], ids=["gru-naive", "gru-nn", "rnn-tanh-nn", "rnn-relu-naive"])
def test_every_cell_trains(impl, cell, nonlinearity):
    """A few epochs of the full loop; naive vs nn parity is tests/test_cells_lm.py's job."""
    sizes = dict(hidden_size=32, batch_size=8, num_steps=10, max_tokens=2000, val_tokens=200)
    trainer = Trainer(TrainConfig(impl=impl, cell=cell, nonlinearity=nonlinearity, epochs=6, **sizes), "cpu")
    metrics = trainer.fit()
    assert metrics["train_perplexity"].iloc[-1] < 0.9 * metrics["train_perplexity"].iloc[0]
    assert metrics["val_perplexity"].notna().all()


def _trainer(**kw):
    return Trainer(TrainConfig(epochs=1, **{**SMALL, **kw}), "cpu")


def test_checkpoint_records_the_cell_and_moves_between_impls(tmp_path):
    naive = _trainer(impl="naive", cell="gru")
    naive.fit()
    naive.save(tmp_path / "g.ckpt")
    assert load_checkpoint(tmp_path / "g.ckpt")["config"]["cell"] == "gru"
    nn_run = _trainer(impl="nn", cell="gru")
    nn_run.resume(tmp_path / "g.ckpt")
    x = torch.randint(0, 28, (2, 5))
    assert torch.allclose(naive.model(x)[0], nn_run.model(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("saved,now,needle", [
    (dict(cell="gru"), dict(cell="lstm"), "holds a 'gru' model, this run trains 'lstm'"),
    (dict(cell="lstm"), dict(cell="gru"), "holds a 'lstm' model, this run trains 'gru'"),
    (dict(cell="rnn"), dict(cell="rnn", nonlinearity="relu"),
     r"holds a 'rnn' \(tanh\) model, this run trains 'rnn' \(relu\)"),
], ids=["gru-into-lstm", "lstm-into-gru", "tanh-into-relu"])
def test_resume_refuses_another_cell(tmp_path, saved, now, needle):
    _trainer(**saved).save(tmp_path / "a.ckpt")
    other = _trainer(**now)
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=needle):
        other.resume(tmp_path / "a.ckpt")
    assert other.epoch == 0 and all(torch.equal(v, before[k]) for k, v in other.model.state_dict().items())


def test_a_checkpoint_without_a_cell_is_an_lstm(tmp_path):
    """Checkpoints written before GRU/RNN existed record no cell: they hold LSTMs."""
    _trainer().save(tmp_path / "old.ckpt")
    payload = load_checkpoint(tmp_path / "old.ckpt")
    for key in ("cell", "nonlinearity"):
        del payload["config"][key]
    save_checkpoint(tmp_path / "old.ckpt", {k: v for k, v in payload.items() if k not in ("format", "version")})
    _trainer().resume(tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="holds a 'lstm' model"):
        _trainer(cell="gru").resume(tmp_path / "old.ckpt")


def _run(args, capsys):
    code = main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("cell_args", [["--cell", "gru"], ["--cell", "rnn", "--nonlinearity", "relu"]],
                         ids=["gru", "rnn-relu"])
def test_cli_trains_a_cell_and_records_it(cell_args, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    code, out, err = _run([*TINY, *cell_args, "--impl", "naive", "--epochs", "2", "--save", str(ckpt)], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("time traveller") and lines[-1].startswith("perplexity ")
    config = load_checkpoint(ckpt)["config"]
    assert config["cell"] == cell_args[1] and config["nonlinearity"] == (cell_args[3] if len(cell_args) > 2 else "tanh")


def test_cli_uses_the_cells_d2l_hidden_size_unless_given(tmp_path, capsys):
    args = [a for a in TINY if a not in ("--hidden-size", "16")]
    ckpt = tmp_path / "r.ckpt"
    code, _, err = _run([*args, "--cell", "rnn", "--epochs", "1", "--max-tokens", "200", "--save", str(ckpt)], capsys)
    assert code == 0, err
    payload = load_checkpoint(ckpt)
    assert payload["config"]["hidden_size"] == 512 and payload["model"]["rnn.weight_hh_l0"].shape == (512, 512)


BAD = {
    "unknown cell": (["--cell", "transformer"], "argument --cell: invalid choice"),
    "nonlinearity on gru": (["--cell", "gru", "--nonlinearity", "relu"], "--nonlinearity: applies to --cell rnn only"),
    "nonlinearity on lstm": (["--nonlinearity", "tanh"], "--nonlinearity: applies to --cell rnn only"),
    "unknown nonlinearity": (["--cell", "rnn", "--nonlinearity", "sigmoid"], "argument --nonlinearity: invalid"),
}


@pytest.mark.parametrize("args,needle", BAD.values(), ids=BAD.keys())
def test_bad_cell_flags_are_one_line_and_exit_2(args, needle, capsys):
    code, _, err = _run([*TINY, *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_cli_resume_across_cells_exits_2_and_leaves_the_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert _run([*TINY, "--cell", "gru", "--epochs", "1", "--save", str(ckpt)], capsys)[0] == 0
    before = ckpt.read_bytes()
    code, _, err = _run([*TINY, "--epochs", "2", "--resume", str(ckpt)], capsys)  # --cell lstm by default
    assert code == 2 and "holds a 'gru' model, this run trains 'lstm'" in err and "--cell" in err
    assert len(err.strip().splitlines()) == 1 and ckpt.read_bytes() == before


def test_resume_refuses_a_gru_recurrent_bias_the_naive_layer_cannot_hold(tmp_path):
    """nn.GRU's own init has a nonzero b_hn; a d2l-init naive GRU has none: refused, nothing loaded."""
    _trainer(impl="nn", cell="gru", init="torch").save(tmp_path / "t.ckpt")
    naive = _trainer(impl="naive", cell="gru")
    before = {k: v.clone() for k, v in naive.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="recurrent_bias=True"):
        naive.resume(tmp_path / "t.ckpt")
    assert all(torch.equal(v, before[k]) for k, v in naive.model.state_dict().items())
    _trainer(impl="naive", cell="gru", init="torch").resume(tmp_path / "t.ckpt")  # a naive GRU with b_hn can
