"""The benchmark suite and its report builder, end to end at the tiny profile (seconds)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`make bench`'s entry point at the tiny profile, publishing a copy as for docs/results/cpu."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--profile=tiny", "--out", str(out / "results"),
         "--publish", str(out / "published"), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out / "results"


def test_publish_copies_every_report_but_not_the_raw_json(tiny_run):
    published = tiny_run.parent / "published"
    names = {p.name for p in published.iterdir()}
    assert {"results.csv", "summary.md", "perplexity.png", "speedup_vs_nn.png", "throughput_vs_batch.png",
            "throughput_vs_hidden.png", "throughput_vs_seq_len.png"} <= names
    assert "benchmark.json" not in names  # holds host details; the CSV has every number
    assert (published / "summary.md").read_text() == (tiny_run / "summary.md").read_text()


def test_summary_names_no_local_path(tiny_run):
    """The summary is committed and shown on GitHub: no absolute paths of the machine it ran on."""
    summary = (tiny_run / "summary.md").read_text()
    for local in (str(tiny_run.parent), str(ROOT), str(Path.home())):
        assert local not in summary


def test_summary_shows_run_lengths_and_time_traveller_continuations(tiny_run):
    from bench.cases import PROFILES

    e2e = PROFILES["tiny"].e2e
    assert e2e.interpreted_epochs != e2e.epochs  # the tiny profile exercises runs of different lengths
    summary = (tiny_run / "summary.md").read_text()
    lines = summary.splitlines()
    row = lambda provider: next(x for x in lines if x.startswith(f"| {provider} | "))  # the headline table's
    assert row("nn").split("|")[2].strip() == str(e2e.epochs)
    assert row("triton-step").split("|")[2].strip() == str(e2e.interpreted_epochs)
    header = next(x for x in lines if "'time traveller' continues as" in x)
    continuations = lines[lines.index(header) + 2:]
    for provider in ("naive", "nn", "triton-cell", "triton-step", "triton-persistent"):
        line = next(x for x in continuations if x.startswith(f"| {provider} | "))
        assert "`time traveller" in line, line


def test_report_writes_a_long_csv_plots_and_a_summary(tiny_run):
    df = pd.read_csv(tiny_run / "results.csv")
    assert {"provider", "mode", "metric", "x_name", "x_value", "p50", "p20", "p80", "unit", "config",
            "device", "torch", "triton", "timestamp"} <= set(df.columns)
    assert {"naive", "nn", "triton-cell", "triton-step"} <= set(df["provider"])
    assert {"forward", "forward_backward", "train_step", "e2e_training"} <= set(df["mode"])
    lat = df[df["metric"] == "latency_ms"]
    assert (lat["p20"] <= lat["p50"]).all() and (lat["p50"] <= lat["p80"]).all()
    assert len(list(tiny_run.glob("*.png"))) >= 3
    summary = (tiny_run / "summary.md").read_text()
    assert "Measured on" in summary and "| triton-step |" in summary


def test_interpreted_providers_are_labelled_and_kept_out_of_speedups(tiny_run):
    df = pd.read_csv(tiny_run / "results.csv")
    triton_rows = df[df["provider"].str.startswith("triton")]
    summary = (tiny_run / "summary.md").read_text()
    if triton_rows["interpreted"].all():
        line = next(x for x in summary.splitlines() if x.startswith("| triton-step |"))
        assert "| interpreter | — | — |" in line


def test_every_provider_tracks_nn_perplexity_within_one_percent(tiny_run):
    from bench.cases import PROFILES

    df = pd.read_csv(tiny_run / "results.csv")
    ppl = df[(df["mode"] == "e2e_training") & (df["metric"] == "train_perplexity")]
    ppl = ppl.assign(epoch=ppl["x_value"].astype(int))  # x_value also holds shape names: strings in the CSV
    wide = ppl.pivot_table(index="epoch", columns="provider", values="p50")
    wide = wide[wide.index <= PROFILES["tiny"].e2e.check_epochs]
    assert wide.notna().all().all(), wide  # every provider ran the whole check window
    gap = (wide.div(wide["nn"], axis=0) - 1).abs().max()
    assert (gap <= 0.01).all(), gap


def test_gpu_check_script_runs_its_smoke_mode(tmp_path):
    """bench/gpu_check.py's code paths (race check, accuracy, timing table) on CPU, tiny shapes."""
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "race check (persistent, repeated runs bit-identical): PASS" in proc.stdout
    timings = pd.read_csv(tmp_path / "timings.csv")
    assert {"nn", "triton-cell", "triton-step", "triton-persistent"} <= set(timings["provider"])
    assert (timings["rel_err"] <= 1e-5).all()
