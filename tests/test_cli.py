import subprocess
import sys

import pandas as pd
import pytest
import torch

from lstm_triton.charlm.cli import main

TINY = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "8", "--max-tokens", "600",
        "--val-tokens", "200", "--no-progress", "--num-preds", "5"]


def _run(args, capsys):
    code = main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_prints_predictions_and_the_final_line(tmp_path, capsys):
    csv = tmp_path / "m.csv"
    code, out, err = _run([*TINY, "--epochs", "2", "--impl", "naive", "--metrics-csv", str(csv)], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("time traveller") and lines[1].startswith("traveller")
    assert lines[-1].startswith("perplexity ") and "tokens/sec on cpu" in lines[-1]
    metrics = pd.read_csv(csv)
    assert list(metrics["epoch"]) == [1, 2] and (metrics["train_perplexity"] > 1).all()


def test_save_then_resume_continues_the_epochs(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert _run([*TINY, "--epochs", "1", "--save", str(ckpt)], capsys)[0] == 0
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    assert _run([*TINY, "--epochs", "3", "--resume", str(ckpt)], capsys)[0] == 0
    assert torch.load(ckpt, weights_only=False)["epoch"] == 3


def _corpus(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


BAD_INPUTS = {
    "unknown impl": (["--impl", "gru"], "--impl"),
    "zero epochs": (["--epochs", "0"], "--epochs"),
    "negative hidden": (["--hidden-size", "-3"], "--hidden-size"),
    "zero batch": (["--batch-size", "0"], "--batch-size"),
    "zero lr": (["--lr", "0"], "--lr"),
    "text lr": (["--lr", "fast"], "--lr"),
    "missing corpus": (["--corpus", "/nonexistent/book.txt"], "not found"),
    "num steps too long": (["--num-steps", "50000", "--max-tokens", "10000"], "num_steps=50000"),
    "unknown device": (["--device", "tpu"], "--device"),
    "missing checkpoint": (["--resume", "/nonexistent/run.ckpt"], "no checkpoint"),
    "save in a missing directory": (["--save", "/nonexistent/dir/run.ckpt"], "--save: directory /nonexistent/dir"),
    "save to a directory": (["--save", "/tmp"], "--save: /tmp is a directory"),
    "metrics in a missing directory": (["--metrics-csv", "/nonexistent/m.csv"], "--metrics-csv: directory"),
    "metrics to a directory": (["--metrics-csv", "/tmp"], "--metrics-csv: /tmp is a directory"),
    "fusion without triton": (["--impl", "nn", "--fusion", "step"], "--fusion: applies to --impl triton only"),
}


@pytest.mark.parametrize("args,needle", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    code, out, err = _run([*TINY, *args], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("content,needle", [
    (b"", "no letters"), (b"\x00\x01\x02binary", "not a text file"), (b"\xff\xfe\xfa", "not UTF-8"),
], ids=["empty", "binary", "not-utf8"])
def test_bad_corpus_is_one_line_and_exit_2(tmp_path, capsys, content, needle):
    code, _, err = _run([*TINY, "--corpus", _corpus(tmp_path, "c.txt", content)], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_checkpoint_of_another_shape_is_refused_and_left_intact(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert _run([*TINY, "--epochs", "1", "--save", str(ckpt)], capsys)[0] == 0
    before = ckpt.read_bytes()
    args = [a if a != "16" else "24" for a in TINY]  # --hidden-size 24
    code, _, err = _run([*args, "--epochs", "2", "--resume", str(ckpt)], capsys)
    assert code == 2 and "different model shape" in err and "hidden-size" in err
    assert ckpt.read_bytes() == before


def test_cli_process_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "lstm_triton", "train", "--impl", "gru"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm-triton train: error: argument --impl: invalid choice: 'gru'")


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = _run([*TINY, "--impl", "triton", "--device", "cpu"], capsys)
    assert code == 2 and "needs a CUDA device" in err and len(err.strip().splitlines()) == 1
