"""The benchmark suite and its report builder, end to end at the tiny profile (seconds)."""

import json
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
    """bench/gpu_check.py's stages (race check, per-step timings in three precisions, end-to-end
    tokens/s, SASS columns) on the CPU at tiny shapes, as one command."""
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "race check (persistent, repeated runs bit-identical): PASS" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("tiny ")  # the per-step table comes last
    assert len(list(tmp_path.iterdir())) <= 8  # what a device session can bring back

    timings = pd.read_csv(tmp_path / "timings.csv")
    assert {"nn", "triton-cell", "triton-step", "triton-persistent"} <= set(timings["provider"])
    assert {"fp32-ieee", "fp32-tf32", "bf16"} <= set(timings["precision"])
    assert {"forward", "forward_backward"} == set(timings["mode"])
    fp32 = timings[timings["precision"].str.startswith("fp32")]
    assert (fp32["rel_err"] <= 1e-5).all()  # the interpreter's dots are exact whatever the switch says
    assert (timings[timings["precision"] == "bf16"]["rel_err"] <= 1e-2).all()
    switch = timings.set_index("precision")["cudnn_allow_tf32"]
    assert not switch.loc[["fp32-ieee"]].any() and switch.loc[["fp32-tf32"]].all()
    assert (timings["us_per_step"] * timings["T"] / 1e3 - timings["ms"]).abs().max() < 1e-9

    e2e = pd.read_csv(tmp_path / "e2e.csv")
    assert set(e2e["implementation"]) == {"nn", "triton-auto", "triton-persistent", "naive"}
    assert e2e["train_perplexity"].between(1, 28).all()  # finite, and no worse than chance over 28 tokens
    same_epochs = e2e[e2e["epochs"] == e2e["epochs"].max()]
    assert same_epochs["train_perplexity"].max() / same_epochs["train_perplexity"].min() - 1 <= 1e-4

    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks["sass"]["arch"] == "sm_90" and checks["sass"]["rows"], checks["sass"]
    assert {r["shape"] for r in checks["sass"]["rows"]} == {"d2l", "large"}
    assert "SASS, sm_90" in proc.stdout


def test_tf32_switches_set_both_flags_and_restore_them():
    import torch

    from bench.gpu_stages import tf32_switches

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for enabled in (True, False):
        with tf32_switches(enabled):
            assert torch.backends.cudnn.allow_tf32 is enabled and torch.backends.cuda.matmul.allow_tf32 is enabled
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved
    with pytest.raises(RuntimeError), tf32_switches(not saved[0]):
        raise RuntimeError("restored on the way out too")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved


def test_accuracy_check_fails_nan_and_errors_beyond_tolerance_and_nn():
    from bench.gpu_check import accuracy_table

    rows = [("nn", 3e-5), ("triton-cell", 5e-5), ("triton-step", 7e-5), ("triton-persistent", float("inf"))]
    layers = pd.DataFrame([{"shape": "large", "precision": "fp32-ieee", "provider": p, "rel_err": e,
                            "tolerance": 1e-5} for p, e in rows])
    ok = accuracy_table(layers).set_index("provider")["ok"]
    # within 2x nn.LSTM's own error passes; beyond it, or not finite (rel_err's NaN), fails
    assert ok.to_dict() == {"nn": True, "triton-cell": True, "triton-step": False, "triton-persistent": False}


def test_sass_rows_keep_the_marked_configurations_and_note_missing_columns():
    from bench.gpu_sass import shape_rows

    builds = [{"kernel": "a", "d2l_shape": True, "large_shape": False, "registers": 40},
              {"kernel": "b", "d2l_shape": False, "large_shape": True, "mma_instructions": 64},
              {"kernel": "c", "d2l_shape": False, "large_shape": False}]
    got = shape_rows(builds)
    assert [(r["shape"], r["kernel"]) for r in got["rows"]] == [("d2l", "a"), ("large", "b")]
    assert got["rows"][0]["mma_instructions"] == "—" and got["rows"][1]["mma_instructions"] == 64
    assert "useful_mac_fraction" in got["note"] and "mma_instructions" not in got["note"]


def test_cpu_profile_trims_where_a_cpu_user_learns_least():
    """`make bench` on a CPU stays under 15 minutes: interpreted cases (correctness runs) and the
    large shape (seconds per round) get one round and no warm-up round; naive and nn still train
    to d2l's convergence while the interpreted Triton runs stay short."""
    from bench.cases import PROFILES

    cpu = PROFILES["cpu"]
    assert cpu.rounds_for("d2l", interpreted=True) == (1, 0)
    assert cpu.rounds_for("large", interpreted=False) == (cpu.large_rounds, 0)
    assert cpu.rounds_for("d2l", interpreted=False) == (cpu.rounds, cpu.warmup_rounds)
    assert cpu.e2e_epochs(interpreted=False) == 500
    assert cpu.e2e_epochs(interpreted=True) == cpu.e2e.check_epochs < 500
    assert PROFILES["gpu"].e2e_epochs(interpreted=False) == PROFILES["gpu"].e2e_epochs(interpreted=True) == 500
