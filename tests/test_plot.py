"""``train --plot``: d2l's perplexity figure as a PNG, rewritten after every epoch."""

import contextlib
import io
import math
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread

import lstm_triton.charlm.plot as plot
from lstm_triton.charlm.cli import main
from lstm_triton.charlm.plot import perplexity_figure, perplexity_title
from lstm_triton.charlm.train import Trainer

TINY = ["--hidden-size", "16", "--batch-size", "4", "--num-steps", "6", "--max-tokens", "100",
        "--val-tokens", "50", "--no-progress", "--num-preds", "5"]


def train(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *TINY, *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def drawn(monkeypatch):
    """The metrics frame and title of every figure written, in order (the real file is still written)."""
    calls = []
    real = plot.plot_perplexity

    def spy(metrics, path, title):
        calls.append((metrics.copy(), title))
        real(metrics, path, title)

    monkeypatch.setattr(plot, "plot_perplexity", spy)
    return calls


def test_the_png_is_written_after_every_epoch(tmp_path, drawn):
    png = tmp_path / "ppl.png"
    code, _, err = train("--impl", "naive", "--cell", "gru", "--epochs", "3", "--eval-every", "2",
                         "--plot", str(png))
    assert code == 0, err
    assert [list(m["epoch"]) for m, _ in drawn] == [[1], [1, 2], [1, 2, 3]]
    assert drawn[-1][1] == "GRU char LM, impl naive"
    image = imread(png)  # a PNG matplotlib reads back, at the figure's 6 x 4 in and 120 dpi
    assert image.shape[:2] == (480, 720) and image.std() > 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ppl.png"]  # no temporary file left


def test_an_interrupted_run_leaves_the_last_epochs_figure(tmp_path, drawn, monkeypatch):
    png = tmp_path / "ppl.png"
    real, epochs = Trainer.train_epoch, []

    def train_epoch(self):
        epochs.append(self.epoch)
        if len(epochs) == 2:
            raise KeyboardInterrupt  # Ctrl-C during epoch 2
        return real(self)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    code, _, err = train("--epochs", "5", "--plot", str(png))
    assert code == 130 and "interrupted after epoch 1" in err
    assert [list(m["epoch"]) for m, _ in drawn] == [[1]]
    assert imread(png).shape[:2] == (480, 720)


def test_a_resumed_run_draws_the_whole_history(tmp_path, drawn):
    ckpt, png = tmp_path / "run.pt", tmp_path / "ppl.png"
    assert train("--epochs", "2", "--save", str(ckpt))[0] == 0
    assert not png.exists()
    assert train("--epochs", "3", "--resume", str(ckpt), "--plot", str(png))[0] == 0
    assert [list(m["epoch"]) for m, _ in drawn] == [[1, 2, 3]]
    png.unlink()
    assert train("--epochs", "3", "--resume", str(ckpt), "--plot", str(png))[0] == 0  # nothing left to train
    assert [list(m["epoch"]) for m, _ in drawn][-1] == [1, 2, 3] and png.exists()


def test_validation_is_drawn_where_it_was_measured():
    metrics = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_perplexity": [20.0, 15.0, 12.0, 10.0],
                            "val_perplexity": [math.nan, 16.0, math.nan, 13.0]})
    fig = perplexity_figure(metrics, "t")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["train"].get_xdata()) == [1, 2, 3, 4]
    assert list(lines["val"].get_xdata()) == [2, 4] and list(lines["val"].get_ydata()) == [16.0, 13.0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("epoch", "perplexity", "t")


def test_the_title_names_the_cell_the_impl_and_the_fusion():
    assert perplexity_title("nn", "lstm") == "LSTM char LM, impl nn"
    assert perplexity_title("naive", "rnn", "relu") == "RNN (relu) char LM, impl naive"
    assert perplexity_title("triton", "gru", fusion="auto: step") == "GRU char LM, impl triton (fusion auto: step)"


def test_a_triton_run_titles_the_fusion_level_it_trains_at():
    from lstm_triton.charlm.cli import _plot_title
    from lstm_triton.charlm.train import TrainConfig

    cfg = dict(impl="triton", hidden_size=16, batch_size=4, num_steps=6, max_tokens=100, val_tokens=0)
    assert _plot_title(Trainer(TrainConfig(**cfg, fusion="step"), "cpu")) == "LSTM char LM, impl triton (fusion step)"
    assert _plot_title(Trainer(TrainConfig(**cfg, cell="gru"), "cpu")) == \
        "GRU char LM, impl triton (fusion auto: persistent)"


BAD = {
    "not png": (["--plot", "ppl.jpg"], "--plot: ppl.jpg does not end in .png"),
    "no suffix": (["--plot", "ppl"], "does not end in .png"),
    "missing directory": (["--plot", "/nonexistent/ppl.png"], "--plot: directory /nonexistent does not exist"),
    "a directory": (["--plot", "."], "--plot: . is a directory"),
}


@pytest.mark.parametrize("args,needle", BAD.values(), ids=BAD.keys())
def test_a_bad_plot_path_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = train("--epochs", "1", "--save", "run.pt", "--metrics-csv", "m.csv", *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_plot_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # Python's "not importable"
    code, _, err = train("--epochs", "1", "--plot", str(tmp_path / "p.png"))
    assert code == 2 and len(err.splitlines()) == 1 and "needs matplotlib" in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_charlm_extra_declares_matplotlib():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "matplotlib>=3.7" in project["optional-dependencies"]["charlm"]
