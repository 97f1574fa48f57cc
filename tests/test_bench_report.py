"""The benchmark suite and its report builder, end to end at the tiny profile (seconds)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    json_path = out / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--bench-profile=tiny",
         f"--benchmark-json={json_path}", "--benchmark-save-data", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = subprocess.run([sys.executable, "-m", "bench.report", str(json_path), "--out", str(out / "results")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    return out / "results"


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
    df = pd.read_csv(tiny_run / "results.csv")
    ppl = df[(df["mode"] == "e2e_training") & (df["metric"] == "train_perplexity")]
    wide = ppl.pivot_table(index="x_value", columns="provider", values="p50")
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
