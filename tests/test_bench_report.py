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
            "throughput_vs_hidden.png", "throughput_vs_seq_len.png", "varlen_throughput.png"} <= names
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


def test_varlen_rows_count_real_tokens_and_record_the_length_distribution(tiny_run):
    from bench.cases import PROFILES
    from bench.varlen import VARLEN_PROVIDERS

    cfg = PROFILES["tiny"].varlen
    df = pd.read_csv(tiny_run / "results.csv")
    varlen = df[df["x_name"] == "varlen_T"]
    assert set(varlen["provider"]) == set(VARLEN_PROVIDERS)
    assert set(varlen["mode"]) == {"forward", "forward_backward"}
    assert set(varlen["shape"]) == {"varlen"}
    assert not varlen.duplicated(["provider", "mode", "metric", "x_value", "dtype"]).any()  # one row per case
    for T in cfg.Ts:  # nn and nn-padded are timed at every T
        for provider in ("nn", "nn-padded"):
            assert {"latency_ms", "tokens_per_sec", "max_rel_err"} <= set(
                varlen[(varlen["x_value"].astype(int) == T) & (varlen["provider"] == provider)]["metric"])
    for row in varlen.itertuples():
        config = json.loads(row.config)
        T, B = int(row.x_value), config["B"]
        lo = -(-T // 4)
        assert config["lengths"] == f"uniform integers in [{lo}, {T}]" and config["lengths_seed"] == 0
        assert B * lo <= config["real_tokens"] <= config["padded_tokens"] <= B * T
    timed = varlen[~varlen["interpreted"]].pivot_table(index=["provider", "mode", "x_value"], columns="metric",
                                                       values="p50")
    real = varlen.drop_duplicates(["provider", "mode", "x_value"]).set_index(["provider", "mode", "x_value"])
    real_tokens = real["config"].map(lambda c: json.loads(c)["real_tokens"])
    # tokens/s counts real tokens only: sum(lengths) / median seconds
    expected = real_tokens.loc[timed.index] / (timed["latency_ms"] / 1e3)
    assert ((timed["tokens_per_sec"] / expected - 1).abs() < 1e-9).all()
    triton = varlen[varlen["provider"].str.startswith("triton")]
    assert triton["interpreted"].all()  # no GPU here: correctness runs, labelled as such
    errors = varlen[varlen["metric"] == "max_rel_err"]["p50"]
    assert len(errors) and (errors <= 1e-5).all()  # fp32 vs float64 nn.LSTM on the packed input


def test_varlen_summary_gives_speedups_over_nn_packed_at_the_largest_T(tiny_run):
    from bench.cases import PROFILES

    summary = (tiny_run / "summary.md").read_text()
    assert "## Variable-length batches" in summary
    assert f"At T={max(PROFILES['tiny'].varlen.Ts)}:" in summary
    header = next(x for x in summary.splitlines() if x.startswith("| mode | dtype | nn | nn-padded"))
    assert "triton" not in header  # interpreted: no speed figure
    row = next(x for x in summary.splitlines() if x.startswith("| forward_backward | fp32 | "))
    assert row.split("|")[3].strip().endswith("(1.00×)")  # nn packed against itself
    assert "triton-padded" in summary.split("worst relative error")[1]


def test_varlen_table_speedups_and_ratio_to_our_padded_run():
    from bench.report import varlen_table

    def rows(provider, ms, interpreted=False):
        return [{"provider": provider, "mode": "forward_backward", "dtype": "bf16", "T": 1024, "x_name": "varlen_T",
                 "metric": m, "p50": v, "interpreted": interpreted}
                for m, v in (("latency_ms", ms), ("tokens_per_sec", 1e3 / ms))]

    df = pd.DataFrame(rows("nn", 100.0) + rows("nn-padded", 10.0) + rows("triton-step", 12.0)
                      + rows("triton-padded", 10.0) + rows("triton-cell", 1.0, interpreted=True))
    got = varlen_table(df).set_index("provider")
    assert "triton-cell" not in got.index  # interpreter runs are never a speed figure
    assert got.loc["triton-step", "speedup_vs_nn"] == pytest.approx(100 / 12)
    assert got.loc["triton-step", "ratio_vs_triton_padded"] == pytest.approx(1.2)
    assert got.loc["nn-padded", "speedup_vs_nn"] == pytest.approx(10.0)


def test_varlen_lengths_are_seeded_uniform_in_a_quarter_to_T_and_bad_input_is_named():
    import torch

    from bench.varlen import draw_lengths, varlen_status

    lengths = draw_lengths(1024, 64)
    assert lengths.dtype == torch.int64 and lengths.shape == (64,)
    assert torch.equal(lengths, draw_lengths(1024, 64))  # seeded
    assert 256 <= int(lengths.min()) and int(lengths.max()) <= 1024
    assert int(lengths.max()) - int(lengths.min()) > 512  # spread over the range, not a constant
    assert int(draw_lengths(5, 1000).min()) == 2 and int(draw_lengths(5, 1000).max()) == 5  # ends included
    with pytest.raises(ValueError, match="T and B"):
        draw_lengths(0, 3)
    with pytest.raises(ValueError, match="provider"):
        varlen_status("cudnn", torch.device("cpu"), torch.float32)


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

    varlen = pd.read_csv(tmp_path / "varlen.csv")
    fp32 = varlen[varlen["precision"] == "fp32-tf32"]
    assert set(fp32["provider"]) == {"nn", "nn-padded", "triton-auto", "triton-padded"}
    assert {"forward", "forward_backward"} == set(varlen["mode"])
    assert (fp32["rel_err"] <= 1e-5).all()  # forward+backward vs float64 nn.LSTM on the packed input
    assert (varlen["real_tokens"] < varlen["padded_tokens"]).all()
    assert "variable-length batch (B=3" in proc.stdout and "ours packed/padded" in proc.stdout

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
