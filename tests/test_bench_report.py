"""The benchmark suite and its report builder, end to end at the tiny profile (seconds)."""

import json
import os
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
    # An xdist worker's PYTEST_XDIST_WORKER would tell the inner pytest-benchmark that xdist is on,
    # which disables every benchmark; `make bench` never has it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--profile=tiny", "--out", str(out / "results"),
         "--publish", str(out / "published"), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
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


def _section(summary: str, cell: str) -> list[str]:
    """The lines of summary.md's section of ``cell`` (from its '## ' heading to the next)."""
    from bench.cases import CELL_TITLES

    lines = summary.splitlines()
    start = lines.index(f"## {CELL_TITLES[cell]}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_summary_shows_run_lengths_and_time_traveller_continuations(tiny_run, cell):
    from bench.cases import PROFILES

    e2e = PROFILES["tiny"].e2e_for(cell)
    assert e2e.interpreted_epochs != e2e.epochs  # the tiny profile exercises runs of different lengths
    lines = _section((tiny_run / "summary.md").read_text(), cell)
    row = lambda provider: next(x for x in lines if x.startswith(f"| {provider}"))  # the headline table's
    assert row("nn").split("|")[2].strip() == str(e2e.epochs)
    assert row("triton-step").split("|")[2].strip() == str(e2e.interpreted_epochs)
    header = next(x for x in lines if "'time traveller' continues as" in x)
    continuations = lines[lines.index(header) + 2:]
    for provider in ("naive", "nn", "triton-cell", "triton-step", "triton-persistent"):
        line = next(x for x in continuations if x.startswith(f"| {provider}"))
        assert "`time traveller" in line, line


def test_report_writes_a_long_csv_plots_and_a_summary(tiny_run):
    df = pd.read_csv(tiny_run / "results.csv")
    assert {"cell", "provider", "fusion", "mode", "metric", "x_name", "x_value", "p50", "p20", "p80", "unit",
            "config", "device", "torch", "triton", "timestamp"} <= set(df.columns)
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
        for cell in ("lstm", "gru", "rnn"):
            line = next(x for x in _section(summary, cell) if x.startswith("| triton-step |"))
            assert "| interpreter | — | — |" in line


def test_every_cell_has_every_provider_in_every_mode_and_the_level_that_ran(tiny_run):
    """The CSV's cell column: lstm, gru and rnn (tanh) each with every provider in the layer modes
    and end to end; a Triton row names the fusion level that ran, naive and nn none."""
    from bench.cases import PROFILES
    from bench.providers import PROVIDERS, fusion_ran

    df = pd.read_csv(tiny_run / "results.csv")
    layer = df[df["x_name"] != "varlen_T"]
    assert set(layer["cell"]) == set(PROFILES["tiny"].cells) == {"lstm", "gru", "rnn"}
    assert set(df[df["x_name"] == "varlen_T"]["cell"]) == {"lstm"}  # the variable-length benchmark: LSTM only
    for cell, grp in layer.groupby("cell"):
        for mode in ("forward", "forward_backward", "train_step", "e2e_training"):
            assert set(grp[grp["mode"] == mode]["provider"]) == set(PROVIDERS), (cell, mode)
    triton = layer[layer["provider"].str.startswith("triton-")]
    assert triton["fusion"].isin(["cell", "step", "persistent"]).all()
    assert layer[~layer["provider"].str.startswith("triton-")]["fusion"].isna().all()
    assert (triton[triton["provider"] == "triton-cell"]["fusion"] == "cell").all()
    # what ran is the library's own decision, not a name: GRU/RNN persistent runs step until they get the kernel
    for row in triton.drop_duplicates(["cell", "provider", "B", "H"]).itertuples():
        expected = fusion_ran(row.provider, row.cell, int(row.B), int(row.H), __import__("torch").float32, "cpu")
        assert row.fusion == expected, row
    # float64 reference of the same cell: every layer case within fp32's bound
    errors = layer[layer["metric"] == "max_rel_err"]
    assert len(errors) and (errors["p50"] <= 1e-5).all()


def test_summary_has_a_section_per_cell_lstm_first(tiny_run):
    summary = (tiny_run / "summary.md").read_text()
    headings = [x for x in summary.splitlines() if x.startswith("## ")]
    assert headings == ["## LSTM", "## GRU", "## RNN (tanh)"]
    for cell, nn_name in (("lstm", "nn.LSTM"), ("gru", "nn.GRU"), ("rnn", "nn.RNN")):
        section = "\n".join(_section(summary, cell))
        assert f"### One layer, median latency (speedup over {nn_name})" in section
        assert f"checked against float64 {nn_name} in the same run" in section
        assert "### End-to-end char-LM training" in section
    assert "### Variable-length batches" in "\n".join(_section(summary, "lstm"))
    assert "Variable-length" not in "\n".join(_section(summary, "gru"))
    # the tiny profile's trims for GRU and RNN are stated in their sections, not in the LSTM's
    assert "the tiny profile" in "\n".join(_section(summary, "gru"))
    assert "the tiny profile" not in "\n".join(_section(summary, "lstm"))


def test_plots_have_a_row_per_cell(tiny_run):
    """perplexity.png and speedup_vs_nn.png grow a row per cell (3 here); the sweep plots a row per
    cell that ran the sweep (the tiny profile runs them for the LSTM only)."""
    from matplotlib.image import imread

    height = lambda name: imread(tiny_run / name).shape[0]
    assert height("perplexity.png") == 3 * 4.5 * 120
    assert height("speedup_vs_nn.png") == 3 * 4.5 * 120
    assert height("throughput_vs_batch.png") == round(4.2 * 120)


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
    assert (varlen["cell"] == "lstm").all()
    assert (triton[triton["provider"] == "triton-cell"]["fusion"] == "cell").all()  # the level that ran
    assert triton["fusion"].isin(["cell", "step", "persistent"]).all()
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


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_provider_tracks_nn_perplexity_within_one_percent(tiny_run, cell):
    from bench.cases import PROFILES

    df = pd.read_csv(tiny_run / "results.csv")
    ppl = df[(df["mode"] == "e2e_training") & (df["metric"] == "train_perplexity") & (df["cell"] == cell)]
    ppl = ppl.assign(epoch=ppl["x_value"].astype(int))  # x_value also holds shape names: strings in the CSV
    wide = ppl.pivot_table(index="epoch", columns="provider", values="p50", aggfunc="count")
    assert (wide.fillna(1) == 1).all().all()  # one value per (cell, provider, epoch): no other cell mixed in
    wide = ppl.pivot_table(index="epoch", columns="provider", values="p50")
    wide = wide[wide.index <= PROFILES["tiny"].e2e_for(cell).check_epochs]
    assert len(wide) and wide.notna().all().all(), wide  # every provider ran the whole check window
    gap = (wide.div(wide["nn"], axis=0) - 1).abs().max()
    assert (gap <= 0.01).all(), gap


def test_gpu_check_script_runs_its_smoke_mode(tmp_path):
    """bench/gpu_check.py's stages (race check, per-step timings in three precisions, end-to-end
    tokens/s, SASS columns) on the CPU at tiny shapes, as one command."""
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    race = "race check (persistent, repeated runs bit-identical, no barrier timed out): PASS (2 cases)"
    assert race in proc.stdout  # LSTM, GRU
    assert proc.stdout.rstrip().splitlines()[-1].split()[:2] == ["gru", "tiny"]  # the per-step table comes last
    assert len(list(tmp_path.iterdir())) <= 8  # what a device session can bring back

    timings = pd.read_csv(tmp_path / "timings.csv")
    assert {"nn", "triton-cell", "triton-step", "triton-persistent"} <= set(timings["provider"])
    assert {"fp32-ieee", "fp32-tf32", "bf16"} <= set(timings["precision"])
    assert {"forward", "forward_backward"} == set(timings["mode"])
    assert set(timings["cell"]) == {"lstm", "gru"}  # the GRU's targets are measured beside the LSTM's
    gru_persistent = timings[(timings["cell"] == "gru") & (timings["provider"] == "triton-persistent")]
    assert set(gru_persistent["fusion"]) == {"persistent"} and set(gru_persistent["precision"]) == {"fp32-tf32"}
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
    # the smoke run compiles only the rated builds it shows (a GPU run keeps the whole set)
    report = json.loads((tmp_path / "kernel_report.json").read_text())
    assert report and all(b["d2l_shape"] or b["large_shape"] for b in report)


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
    assert got["note"] == "this kernel_report has no sass_mma_instructions, useful_mac_fraction column(s) yet"


def test_gpu_check_counts_test_outcomes_per_file_with_and_without_xdist():
    from bench.gpu_check import count_collected, count_outcomes

    log = "\n".join([
        "[gw0] [  1%] PASSED tests/test_a.py::test_x[fp32-1] ",
        "[gw3] [  2%] SKIPPED tests/test_b.py::test_y ",
        "tests/test_a.py::test_z FAILED                  [ 50%]",
        "tests/test_cuda_graphs.py::test_replay[lstm] XFAIL (known)  [ 60%]",
        "=========================== short test summary info ============================",
        "FAILED tests/test_a.py::test_z - AssertionError",  # -ra repeats it: not counted twice
        "SKIPPED [1] tests/test_b.py:12: needs two GPUs"])
    got = count_outcomes(log)
    assert {f: {k: v for k, v in c.items() if v} for f, c in got.items()} == {
        "tests/test_a.py": {"PASSED": 1, "FAILED": 1}, "tests/test_b.py": {"SKIPPED": 1},
        "tests/test_cuda_graphs.py": {"XFAIL": 1}}
    assert count_collected("tests/test_a.py::t[1]\ntests/test_a.py::t[2]\ntests/test_b.py::u\n\n3 tests collected") \
        == {"tests/test_a.py": 2, "tests/test_b.py": 1}


def test_gpu_check_host_barrier_check_only_in_the_correctness_stages(monkeypatch):
    from bench.gpu_check import stage_env

    monkeypatch.setenv("LSTM_TRITON_CHECK_BARRIER", "1")  # even if the caller exported it
    assert {s for s in ("tests", "race", "layers", "varlen", "e2e")
            if stage_env(s).get("LSTM_TRITON_CHECK_BARRIER") == "1"} == {"tests", "race"}
    assert all("LSTM_TRITON_CHECK_BARRIER" not in stage_env(s) for s in ("layers", "varlen", "e2e"))


def test_gpu_check_tests_stage_takes_every_cuda_marked_file_and_the_new_cuda_files():
    from bench.gpu_check import CUDA_MARK, ROOT, cuda_test_files

    present, absent = cuda_test_files()
    marked = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py") if CUDA_MARK in p.read_text()}
    assert "tests/test_precision.py" in marked and marked <= set(present)
    assert {"tests/test_cuda_graphs.py", "tests/test_device_guard.py"} <= set(present) | set(absent)
    assert all((ROOT / f).exists() for f in present) and not any((ROOT / f).exists() for f in absent)


def test_gpu_check_writes_a_summary_before_any_stage_has_run(tmp_path):
    import torch

    from bench.gpu_check import Check

    check = Check(tmp_path, tmp_path / "parts", torch.device("cpu"), False, "sm_90", "no GPU: sm_90")
    summary, ok = check.write()
    assert ok and (tmp_path / "summary.txt").read_text() == summary + "\n"
    assert "INCOMPLETE: not yet run: race, layers, varlen, e2e" in summary.splitlines()[0]
    assert json.loads((tmp_path / "checks.json").read_text())["complete"] is False


def test_cpu_profile_trims_where_a_cpu_user_learns_least():
    """`make bench` on a CPU stays under 15 minutes on the slower 2-core machine: no large shape, the
    char LM 30 epochs for naive and nn, interpreted Triton (correctness runs) one round, no warm-up,
    forward+backward only, and the char LM at the persistent level only — each said in the summary;
    a GPU runs everything."""
    from types import SimpleNamespace

    from bench.cases import MODES, PROFILES
    from bench.test_layer_bench import _skip_reason

    cpu, gpu = PROFILES["cpu"], PROFILES["gpu"]
    assert [s.name for s in cpu.named] == ["d2l"] and "large" in [s.name for s in gpu.named]
    assert cpu.rounds_for("d2l", interpreted=True) == (1, 0)
    assert cpu.rounds_for("d2l", interpreted=False) == (cpu.rounds, cpu.warmup_rounds)
    for cell in ("lstm", "gru", "rnn"):
        assert cpu.e2e_epochs(interpreted=False, cell=cell) == 30
        assert cpu.e2e_epochs(interpreted=True, cell=cell) == cpu.e2e_for(cell).check_epochs == 1
        assert cpu.e2e_for(cell).hidden_size is None  # d2l's for the cell (RNN 512)
        assert gpu.e2e_epochs(interpreted=False, cell=cell) == gpu.e2e_epochs(interpreted=True, cell=cell) == 500
        assert gpu.cell_plan(cell) == ""
        plan = cpu.cell_plan(cell)
        assert "forward+backward only" in plan and "persistent level only" in plan
    assert [m for m in MODES if cpu.runs_interpreted("d2l", m)] == ["forward_backward"]
    assert all(gpu.runs_interpreted("d2l", m) for m in MODES) and not cpu.runs_interpreted("hidden", "forward_backward")
    assert [p for p in ("triton-cell", "triton-step", "triton-persistent") if cpu.trains_interpreted(p)] == [
        "triton-persistent"]
    assert gpu.trains_interpreted("triton-cell") and PROFILES["tiny"].trains_interpreted("triton-step")

    # the layer bench's own rule: an interpreted case outside the profile's modes is skipped with the reason,
    # a timed one never is
    case = SimpleNamespace(provider="triton-step", cell="lstm", shape=cpu.named[0], mode="forward")
    interpreted, timed = SimpleNamespace(available=True, interpreted=True), SimpleNamespace(available=True,
                                                                                             interpreted=False)
    assert "forward_backward" in _skip_reason(case, interpreted, cpu)
    assert _skip_reason(case, timed, cpu) is None and _skip_reason(case, interpreted, gpu) is None
    case.mode = "forward_backward"
    assert _skip_reason(case, interpreted, cpu) is None


def _bench_json(path, records):
    """A pytest-benchmark JSON holding ``records``: (extra_info, seconds per round)."""
    benchmarks = [{"extra_info": info, "stats": {"data": [sec] * 3, "median": sec, "q1": sec, "q3": sec}}
                  for info, sec in records]
    path.write_text(json.dumps({"datetime": "2025-01-01T00:00:00", "benchmarks": benchmarks}))
    return path


MACHINE = {"device": "test CPU", "torch": "t", "triton": "tr", "cudnn": "n/a", "cuda": "n/a", "interpreter": True}


def _layer(cell, provider, mode="forward", fusion=None, interpreted=False, **extra):
    info = {"provider": provider, "mode": mode, "shape": "d2l", "T": 35, "B": 32, "I": 28, "H": 256, "dtype": "fp32",
            "sweep_value": None, "tokens": 1120, "interpreted": interpreted, "max_rel_err": 1e-7, "tolerance": 1e-5,
            "machine": MACHINE, "fusion": fusion, **extra}
    if cell is not None:
        info["cell"] = cell
    return info


def _e2e(cell, provider, ppl, fusion=None, interpreted=False):
    epochs = [{"epoch": e + 1, "train_perplexity": p, "val_perplexity": p + 1, "tokens_per_sec": 1000.0,
               "seconds": 1.0} for e, p in enumerate(ppl)]
    return {"cell": cell, "provider": provider, "mode": "e2e_training", "shape": "d2l-char-lm", "dtype": "fp32",
            "interpreted": interpreted, "machine": MACHINE, "fusion": fusion, "check_epochs": len(ppl),
            "config": {"num_steps": 35, "batch_size": 32, "hidden_size": 512 if cell == "rnn" else 256},
            "epochs": epochs, "predictions": {"time traveller": f"time traveller {cell}"},
            "cell_plan": "" if cell == "lstm" else f"The cpu profile trims {cell}."}


def test_e2e_section_names_a_one_epoch_check_and_keeps_a_tiny_gap_visible(tmp_path):
    """A check over one epoch is headed 'epoch 1' (not 'epochs 1–1'), and a gap past it too small for
    one decimal of a percent is printed in e-notation instead of as 0.0%."""
    from bench.report import build_reports

    nn_ppl, naive_ppl = [20.0, 18.0, 16.0], [20.0, 18.0, 16.0 * (1 + 2e-5)]
    records = [(_e2e("lstm", "nn", nn_ppl), 1.0), (_e2e("lstm", "naive", naive_ppl), 1.0)]
    for record, _ in records:
        record["check_epochs"] = 1
    summary = build_reports(_bench_json(tmp_path / "b.json", records), tmp_path / "out")["summary"].read_text()
    assert "max relative perplexity gap vs nn (epoch 1) |" in summary and "epochs 1–1" not in summary
    assert "largest over all shared epochs naive 2.0e-03%." in summary


def test_a_run_without_char_lm_still_says_where_it_ran_and_what_its_profile_left_out(tmp_path, capsys):
    """The machine line and each cell's profile note come from any record (here layer cases only),
    a latency of a second or more prints in seconds, and bench.report refuses a file that is no
    benchmark JSON in one line (exit 2)."""
    from bench.report import build_reports, latency
    from bench.report import main as report_main

    plan = "Where Triton runs under the interpreter, the cpu profile trims."
    records = [(_layer("rnn", "nn", cell_plan=plan), 1.44), (_layer("rnn", "naive", cell_plan=plan), 2.0)]
    summary = build_reports(_bench_json(tmp_path / "b.json", records), tmp_path / "out")["summary"].read_text()
    assert "Measured on **test CPU**" in summary and plan in summary
    assert "| d2l | forward | fp32 | 2 s (0.72×) | 1.44 s (1.00×) |" in summary
    assert latency(41.06) == "41.1 ms" and latency(1440.0) == "1.44 s"
    (tmp_path / "results.csv").write_text("cell,provider\n")
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path / "results.csv"), "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "error: json: expected a file written by pytest --benchmark-json" in err[-1]


def test_report_groups_by_cell_with_speedups_over_the_same_cells_nn(tmp_path):
    """Built from a hand-made JSON: each cell's section holds its own numbers, LSTM first whatever
    the order in the JSON, speedups divide by nn of the same cell, and a Triton provider that ran
    another level says so."""
    from bench.report import build_reports, load_long_table, speedup_table

    records = [
        (_layer("gru", "nn"), 0.004), (_layer("gru", "naive"), 0.016),
        (_layer("lstm", "nn"), 0.010), (_layer("lstm", "naive"), 0.020),
        (_layer("gru", "triton-persistent", fusion="step", interpreted=True), 3.0),
        (_e2e("gru", "nn", [20.0, 18.0]), 1.0), (_e2e("gru", "triton-persistent", [20.0, 18.1], "step", True), 1.0),
        (_e2e("lstm", "nn", [19.0, 17.0]), 1.0),
    ]
    path = _bench_json(tmp_path / "b.json", records)
    df, e2e = load_long_table(path)
    assert set(e2e) == {("gru", "nn"), ("gru", "triton-persistent"), ("lstm", "nn")}
    speed = speedup_table(df).set_index(["cell", "provider"])["speedup_vs_nn"]
    assert speed[("lstm", "naive")] == pytest.approx(0.5)
    assert speed[("gru", "naive")] == pytest.approx(0.25)  # over nn.GRU's 4 ms, not nn.LSTM's 10 ms
    assert ("gru", "triton-persistent") not in speed.index  # interpreted: no speed figure

    paths = build_reports(path, tmp_path / "out")
    csv = pd.read_csv(paths["csv"])
    assert set(csv["cell"]) == {"lstm", "gru"}
    assert (csv[csv["provider"] == "triton-persistent"]["fusion"] == "step").all()
    summary = paths["summary"].read_text()
    lines = summary.splitlines()
    assert [x for x in lines if x.startswith("## ")] == ["## LSTM", "## GRU"]
    lstm, gru = "\n".join(_section(summary, "lstm")), "\n".join(_section(summary, "gru"))
    assert "| d2l | forward | fp32 | 20 ms (0.50×) | 10 ms (1.00×) |" in lstm
    assert "| d2l | forward | fp32 | 16 ms (0.25×) | 4 ms (1.00×) |" in gru
    assert "16 ms" not in lstm and "20 ms" not in gru
    assert "| triton-persistent (ran as step) | 2 | interpreter |" in gru
    assert "triton-persistent ran step" in gru and "ran step" not in lstm
    assert "speedup over nn.GRU" in gru and "H=256" in gru
    assert "`time traveller gru`" in gru and "`time traveller lstm`" in lstm
    assert "The cpu profile trims gru." in gru and "trims" not in lstm
    assert "| 18.100 | 19.10 | 18.100 | 5.6e-03 |" in gru  # the gap is to nn.GRU's 18.0, not nn.LSTM's 17.0


def test_report_reads_json_from_before_the_cell_dimension_as_lstm(tmp_path):
    from bench.report import build_reports

    path = _bench_json(tmp_path / "old.json", [(_layer(None, "nn"), 0.01), (_layer(None, "naive"), 0.02)])
    paths = build_reports(path, tmp_path / "out")
    assert set(pd.read_csv(paths["csv"])["cell"]) == {"lstm"}
    summary = paths["summary"].read_text()
    assert "## LSTM" in summary and "## GRU" not in summary
    assert "| d2l | forward | fp32 | 20 ms (0.50×) | 10 ms (1.00×) |" in summary


def test_layer_cases_per_cell_ids_and_profile_trims():
    from bench.cases import PROFILES, e2e_cases, layer_cases, resolve_cells
    from bench.providers import PROVIDERS

    cpu = PROFILES["cpu"]
    cases = layer_cases(cpu, PROVIDERS)
    assert [c.cell for c in cases] == sorted((c.cell for c in cases), key=["lstm", "gru", "rnn"].index)  # LSTM first
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids)
    assert "gru-triton-step-forward_backward-d2l-T35-B32-I28-H256-fp32" in ids
    assert "lstm-nn-train_step-d2l-T35-B32-I28-H256-fp32" in ids
    for cell in ("gru", "rnn"):  # the same shapes and modes as the LSTM's but for what the profile trims
        lstm = {(c.provider, c.mode, c.shape, c.dtype) for c in cases if c.cell == "lstm"}
        other = {(c.provider, c.mode, c.shape, c.dtype) for c in cases if c.cell == cell}
        assert other <= lstm
        assert {k[2].name for k in lstm - other} <= set(cpu.lstm_only_shapes)
    assert [c.id for c in e2e_cases(cpu, ["naive", "nn", "triton-step"], ("lstm", "gru"))] == [
        "lstm-nn", "lstm-naive", "lstm-triton-step", "gru-nn", "gru-naive", "gru-triton-step"]  # nn first per cell
    assert resolve_cells(cpu) == ("lstm", "gru", "rnn")
    assert resolve_cells(cpu, "rnn_relu,lstm") == ("lstm", "rnn_relu")
    with pytest.raises(ValueError, match="cells"):
        resolve_cells(cpu, "lstm,tanh")
    assert PROFILES["gpu"].lstm_only_shapes == () and PROFILES["gpu"].cell_e2e == ()  # a GPU runs every cell fully


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn_relu"])
@pytest.mark.parametrize("provider", ["naive", "nn", "triton-step"])
def test_every_cells_providers_pass_the_float64_check_and_a_wrong_weight_fails_it(cell, provider):
    """bench/measure.py's check for every cell, with the naive layers' gradients mapped to
    torch.nn's names (the GRU's recurrent n bias apart); one perturbed recurrent weight fails it."""
    import torch

    from bench.measure import check_against_reference
    from bench.providers import build_layer, reference_weights

    T, B, I, H = 4, 3, 5, 6
    weights = reference_weights(I, H, 0, cell)
    for mode in ("forward", "forward_backward"):
        layer = build_layer(provider, weights, "cpu", torch.float32, cell)
        errors = check_against_reference(layer, mode, T, B, I, H, "cpu", torch.float32, 0, cell)
        assert max(errors.values()) <= 1e-5, errors
        assert ("d_c0" in errors) == (cell == "lstm" and mode != "forward")
    wrong = dict(weights, weight_hh_l0=weights["weight_hh_l0"] * 1.01)
    layer = build_layer(provider, wrong, "cpu", torch.float32, cell)
    errors = check_against_reference(layer, "forward_backward", T, B, I, H, "cpu", torch.float32, 0, cell)
    assert errors["output"] > 1e-5 and errors["d_weight_hh_l0"] > 1e-5
