"""Mixed precision and torch.compile for the char LM (issue 19, part 4): ``--dtype bf16|fp16`` trains
under autocast within the dtype's tolerance of fp32, fp16 with loss scaling; ``--compile`` trains
to the eager losses and writes the eager checkpoints.

On this project's CPUs nn.LSTM has no bf16/fp16 autocast kernel (oneDNN; helpers.py says when it
has), so the autocast runs train nn's GRU and the naive LSTM, and nn's LSTM is checked to either run
or be refused in one line.
"""

import functools

import pytest
import torch
from torch import nn

from lstm_triton.charlm.cli import main
from lstm_triton.charlm.precision import check_autocast_runs
from lstm_triton.charlm.train import TrainConfig, Trainer

TINY = dict(hidden_size=16, batch_size=4, num_steps=6, max_tokens=150, val_tokens=50, epochs=2)
CLI_TINY = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "6", "--max-tokens", "100",
            "--val-tokens", "30", "--no-progress", "--num-preds", "3", "--epochs", "1", "--device", "cpu"]
# One rounding unit of the dtype (bf16: 8 significant bits, fp16: 11). The per-epoch mean loss and
# the validation perplexity must stay within it of fp32's: the largest gaps measured over these 2
# epochs are 2.1e-4 (bf16, nn GRU's validation perplexity) and 1.3e-5 (fp16), 18x and 37x inside.
TOLERANCE = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}


@functools.cache
def _fp32_run(impl, cell):
    metrics = Trainer(TrainConfig(impl=impl, cell=cell, **TINY), "cpu").fit()
    return metrics["train_loss"].tolist(), metrics["val_perplexity"].iloc[-1]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("impl, cell", [("nn", "gru"), ("naive", "lstm")], ids=["nn-gru", "naive-lstm"])
def test_autocast_training_stays_within_the_dtypes_tolerance_of_fp32(impl, cell, dtype):
    trainer = Trainer(TrainConfig(impl=impl, cell=cell, dtype=dtype, **TINY), "cpu")
    seen = set()
    trainer.model.linear.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
    metrics = trainer.fit()
    assert seen == {getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[dtype])}  # it ran in the dtype
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast, not .to(dtype)
    assert trainer.scaler.is_enabled() == (dtype == "fp16")
    losses, val = _fp32_run(impl, cell)
    gaps = [abs(a / b - 1) for a, b in zip(metrics["train_loss"], losses)]
    gaps.append(abs(metrics["val_perplexity"].iloc[-1] / val - 1))
    assert max(gaps) <= TOLERANCE[dtype], gaps


def test_fp16_skips_the_steps_whose_scaled_gradients_overflow():
    """GradScaler's contract through the Trainer: with a loss scale far past fp16's range every step's
    gradients are inf, so no step is taken (the weights stay as drawn) and the scale halves per batch."""
    trainer = Trainer(TrainConfig(impl="nn", cell="gru", dtype="fp16", **{**TINY, "epochs": 1}), "cpu")
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    row = trainer.train_epoch()
    batches = row["tokens"] // (TINY["batch_size"] * TINY["num_steps"])
    assert all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before))
    assert trainer.scaler.get_scale() == 2.0 ** (100 - batches)


def test_fp16_resume_continues_with_the_saved_loss_scale(tmp_path):
    cfg = TrainConfig(impl="nn", cell="gru", dtype="fp16", **TINY)
    first = Trainer(cfg, "cpu")
    first.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 7)  # as after 9 overflows from 2**16
    first.save(tmp_path / "run.ckpt")
    resumed = Trainer(cfg, "cpu")
    resumed.resume(tmp_path / "run.ckpt")
    assert resumed.scaler.get_scale() == 2.0 ** 7


def _runs_under_autocast(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            nn.LSTM(3, 5)(torch.randn(4, 2, 3))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_nn_lstm_runs_the_dtype_or_is_refused_in_one_line(dtype, tmp_path, capsys):
    """Where oneDNN's CPU LSTM has the dtype, the run trains; elsewhere it stops before training."""
    csv = tmp_path / "m.csv"
    code = main(["train", *CLI_TINY, "--impl", "nn", "--dtype", dtype, "--metrics-csv", str(csv)])
    err = capsys.readouterr().err
    if _runs_under_autocast({"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]):
        assert code == 0 and csv.exists(), err
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"dtype '{dtype}' cannot run impl 'nn' cell 'lstm' on cpu" in err
        assert not csv.exists()


def test_an_autocast_the_device_turns_off_is_refused(monkeypatch):
    """torch switches autocast off (with a warning) for a dtype the device does not take: that run
    would be fp32 under a bf16 name, so it is refused."""
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *args: False)
    with pytest.raises(ValueError, match="dtype 'bf16' cannot run the model on cpu: autocast on cpu does not"):
        check_autocast_runs(nn.Module(), torch.device("cpu"), "bf16", "the model")


def test_cli_trains_in_the_dtype_and_saves_fp32_weights(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    code = main(["train", *CLI_TINY, "--impl", "nn", "--cell", "gru", "--dtype", "fp16", "--save", str(ckpt)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].startswith("time traveller")  # predictions run under the autocast too
    saved = torch.load(ckpt, weights_only=False)
    assert saved["config"]["dtype"] == "fp16" and saved["grad_scaler"]["scale"] > 0
    assert all(t.dtype == torch.float32 for t in saved["model"].values())


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches and its counters (reset() leaves the counters: graphs that earlier tests of
    this process compiled would count here)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def test_compiled_training_equals_eager_and_saves_eager_checkpoints(tmp_path, fresh_dynamo):
    """aot_eager (forward and backward graphs, no code generation: cheap on a CPU) on nn's LSTM, the
    default model: 3 epochs of 3 batches, each epoch's loss within 1e-6 of eager's; one graph for
    every batch; the checkpoints hold the same keys and values as eager's (no ``_orig_mod.``)."""
    cfg = dict(impl="nn", hidden_size=16, batch_size=4, num_steps=6, max_tokens=100, val_tokens=0, epochs=3)
    eager = Trainer(TrainConfig(**cfg), "cpu")
    compiled = Trainer(TrainConfig(**cfg, compile=True, compile_backend="aot_eager"), "cpu")
    losses = [torch.tensor(t.fit()["train_loss"].tolist(), dtype=torch.float64) for t in (eager, compiled)]
    assert float(((losses[1] - losses[0]).abs() / losses[0]).max()) <= 1e-6, losses
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert isinstance(compiled.forward.compiled, torch._dynamo.eval_frame.OptimizedModule)
    eager.save(tmp_path / "eager.ckpt")
    compiled.save(tmp_path / "compiled.ckpt")
    a, b = (torch.load(tmp_path / f"{n}.ckpt", weights_only=False)["model"] for n in ("eager", "compiled"))
    assert list(a) == list(b) and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


BAD_FLAGS = {
    "num-layers zero": (["--num-layers", "0"], "--num-layers"),
    "num-layers text": (["--num-layers", "two"], "--num-layers"),
    "dtype fp64": (["--dtype", "fp64"], "--dtype: invalid choice"),
    "dtype empty": (["--dtype", ""], "--dtype: invalid choice"),
    "compile with a value": (["--compile", "yes"], "unrecognized arguments: yes"),
    "unknown backend": (["--compile", "--compile-backend", "tvm"], "--compile-backend: invalid choice"),
    "backend without compile": (["--compile-backend", "eager"], "--compile-backend: applies with --compile"),
}


@pytest.mark.parametrize("args,needle", BAD_FLAGS.values(), ids=BAD_FLAGS.keys())
def test_bad_new_flags_exit_2_in_one_line_and_write_nothing(args, needle, tmp_path, capsys):
    ckpt, csv = tmp_path / "run.ckpt", tmp_path / "m.csv"
    code = main(["train", *CLI_TINY, "--save", str(ckpt), "--metrics-csv", str(csv), *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not ckpt.exists() and not csv.exists()
