"""Turn pytest-benchmark's JSON into the long-format CSV, PNG plots and summary.md.

    python -m bench.report results/benchmark.json --out results

CSV: one row per cell × provider × mode × metric × x value, with p50/p20/p80, unit, the config as
JSON, device, library versions and a timestamp. ``cell`` is lstm, gru, rnn (tanh) or rnn_relu;
``fusion`` is the fusion level a Triton provider actually ran (the library's own choice: a
persistent launch that does not fit, e.g., runs step, and the summary says "(ran as step)"). Interpreter
runs (Triton on CPU) are labelled ``interpreted`` and are never used for a speed figure: plots
leave them out and the summary shows their perplexity but no speedup.

Grouping by cell: summary.md has a section per cell (LSTM first), each with its end-to-end table,
its one-layer latency table (speedups over torch.nn's layer of that cell) and its correctness
line; every plot has a row (or panel) per cell in the same order. JSON from before the cell
dimension reads as LSTM.

Peers and checks (bench/peers/, bench/report_checks.py): ``backend`` is what ran under a peer's
name (inductor, triton, cuda_fused, ...); every layer row carries ``precision`` (fp32-ieee,
fp32-tf32, bf16: set explicitly on every provider), ``rel_err`` (the case's worst relative error
over output, final state and every gradient vs float64 torch.nn) and ``first_call_s``
(forward+backward cases: construction to first forward+backward finished, compilation included;
also a ``first_call_s`` metric row); the robustness check's ``rel_err_x100`` (inputs x ×100) is a
metric row. summary.md adds an accuracy column to the latency tables, a first-call table, a
robustness table and the peers that did not run with their reasons (``skipped_peers`` in the JSON).

Variable-length rows (bench/test_varlen_bench.py, LSTM only) have ``shape`` "varlen" and ``x_name``
"varlen_T" (x_value: the nominal length T; lengths uniform in [T/4, T]); their tokens/s counts real
tokens only and their config holds the length distribution and the real-token count.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cases import CELL_TITLES, CELLS, NN_CLASS_NAMES
from bench.report_checks import (
    accuracy_cells,
    first_call_section,
    load_skipped_peers,
    precision_line,
    robustness_section,
    skipped_peers_lines,
)

PROVIDER_ORDER = ["naive", "nn", "nn-padded", "triton-cell", "triton-step", "triton-persistent", "triton-padded",
                  "compiled", "torchrl-triton", "flashrnn"]
CELL_ORDER = list(CELLS)  # lstm, gru, rnn (tanh), rnn_relu: the order of summary sections and plot rows
CSV_COLUMNS = ["cell", "provider", "fusion", "mode", "metric", "x_name", "x_value", "p50", "p20", "p80", "unit",
               "dtype", "shape", "T", "B", "I", "H", "interpreted", "config", "device", "torch", "triton", "cudnn",
               "timestamp", "backend", "precision", "rel_err", "first_call_s"]


def _cells(df: pd.DataFrame) -> list[str]:
    """The cells present in ``df``, LSTM first (CELL_ORDER), unknown names last."""
    present = set(df["cell"].dropna()) if "cell" in df else set()
    return sorted(present, key=lambda c: (CELL_ORDER.index(c) if c in CELL_ORDER else 99, c))


def _title(cell: str) -> str:
    return CELL_TITLES.get(cell, cell)


def _nn_name(cell: str) -> str:
    return NN_CLASS_NAMES.get(cell, "nn")


def _ran_as(provider: str, fusion) -> str:
    """' (ran as step)' when a ``triton-<level>`` provider ran another level; '' otherwise."""
    if not provider.startswith("triton-") or not isinstance(fusion, str) or not fusion:
        return ""
    return "" if provider == f"triton-{fusion}" else f" (ran as {fusion})"


def _quantiles(stats: dict) -> tuple[float, float, float]:
    """(p50, p20, p80) of the round times in seconds; quartiles if the raw data was not saved."""
    data = stats.get("data")
    if data:
        p20, p50, p80 = np.quantile(np.asarray(data, dtype=float), [0.2, 0.5, 0.8])
        return float(p50), float(p20), float(p80)
    return stats["median"], stats["q1"], stats["q3"]


def _common(info: dict, timestamp: str) -> dict:
    m = info.get("machine", {})
    return {"cell": info.get("cell", "lstm"), "provider": info["provider"], "fusion": info.get("fusion"),
            "backend": info.get("backend"), "precision": info.get("precision"),
            "mode": info["mode"], "dtype": info.get("dtype"),
            "shape": info.get("shape"), "interpreted": bool(info.get("interpreted")), "device": m.get("device"),
            "torch": m.get("torch"), "triton": m.get("triton"), "cudnn": m.get("cudnn"), "timestamp": timestamp}


def _layer_rows(bench: dict, timestamp: str) -> list[dict]:
    info = bench["extra_info"]
    swept = info.get("sweep_value") is not None
    config = {k: info[k] for k in ("T", "B", "I", "H", "dtype", "tolerance")}
    if info.get("fusion_requested"):
        config["fusion_requested"] = info["fusion_requested"]
    return _timing_rows(bench, timestamp, info["shape"] if swept else "shape",
                        info["sweep_value"] if swept else info["shape"], config)


VARLEN_CONFIG_KEYS = ("T", "B", "I", "H", "dtype", "tolerance", "lengths", "lengths_seed", "real_tokens",
                      "padded_tokens", "T_max")


def _varlen_rows(bench: dict, timestamp: str) -> list[dict]:
    """A variable-length case: x is the nominal T; tokens (real ones) = sum of the lengths."""
    info = bench["extra_info"]
    return _timing_rows(bench, timestamp, "varlen_T", info["T"], {k: info.get(k) for k in VARLEN_CONFIG_KEYS})


def _timing_rows(bench: dict, timestamp: str, x_name: str, x_value, config: dict) -> list[dict]:
    """latency, tokens/s (``extra_info["tokens"]`` per round), error and the CUDA extras of one case."""
    info = bench["extra_info"]
    base = _common(info, timestamp)
    base.update({k: info[k] for k in ("T", "B", "I", "H")})
    base.update(x_name=x_name, x_value=x_value, config=json.dumps(config), rel_err=info.get("max_rel_err"),
                first_call_s=info.get("first_call_s"))
    p50, p20, p80 = _quantiles(bench["stats"])
    tokens = info["tokens"]
    rows = [
        {**base, "metric": "latency_ms", "p50": p50 * 1e3, "p20": p20 * 1e3, "p80": p80 * 1e3, "unit": "ms"},
        # a faster round (p20 of time) is a higher throughput (p80 of tokens/s)
        {**base, "metric": "tokens_per_sec", "p50": tokens / p50, "p20": tokens / p80, "p80": tokens / p20,
         "unit": "tokens/s"},
        {**base, "metric": "max_rel_err", "p50": info["max_rel_err"], "unit": "relative"},
    ]
    for key, unit in (("kernel_ms", "ms"), ("peak_mem_mb", "MiB"), ("first_call_s", "s"), ("rel_err_x100", "relative")):
        if info.get(key) is not None:
            rows.append({**base, "metric": key, "p50": info[key], "unit": unit})
    return rows


def _e2e_rows(bench: dict, timestamp: str) -> list[dict]:
    info = bench["extra_info"]
    base = {**_common(info, timestamp), "x_name": "epoch", "config": json.dumps(info["config"]),
            "T": info["config"]["num_steps"], "B": info["config"]["batch_size"], "H": info["config"]["hidden_size"]}
    rows = []
    for epoch in info["epochs"]:
        for metric, unit in (("train_perplexity", "perplexity"), ("val_perplexity", "perplexity"),
                             ("tokens_per_sec", "tokens/s"), ("seconds", "s")):
            value = epoch[metric]
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append({**base, "x_value": epoch["epoch"], "metric": metric, "p50": value, "unit": unit})
    return rows


def load_long_table(json_path: str | Path) -> tuple[pd.DataFrame, dict]:
    """The long-format table and the raw e2e records (for predictions and each cell's profile
    notes), keyed by ``(cell, provider)``, from a benchmark JSON."""
    raw = json.loads(Path(json_path).read_text())
    timestamp = raw.get("datetime", "")
    rows, e2e = [], {}
    for bench in raw["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("mode") == "e2e_training":
            rows += _e2e_rows(bench, timestamp)
            e2e[(info.get("cell", "lstm"), info["provider"])] = info
        elif info.get("benchmark") == "varlen":
            rows += _varlen_rows(bench, timestamp)
        elif "provider" in info:
            rows += _layer_rows(bench, timestamp)
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    return df, e2e


def load_run_notes(json_path: str | Path) -> tuple[dict, dict[str, str]]:
    """The machine record and each cell's profile note (``cell_plan``) as any record of the run
    carries them — layer, variable-length or char-LM — so a run that trained no char LM still
    says where it ran and what its profile left out."""
    machine, plans = {}, {}
    for bench in json.loads(Path(json_path).read_text())["benchmarks"]:
        info = bench.get("extra_info", {})
        machine = machine or info.get("machine") or {}
        if info.get("cell_plan"):
            plans.setdefault(info.get("cell", "lstm"), info["cell_plan"])
    return machine, plans


# ----------------------------------------------------------------------------- plots


def _ordered(providers) -> list[str]:
    return sorted(set(providers), key=lambda p: PROVIDER_ORDER.index(p) if p in PROVIDER_ORDER else 99)


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_sweep(df: pd.DataFrame, axis: str, path: Path, device: str) -> None:
    """Throughput vs ``axis``: a row of panels per cell (LSTM first), a column per dtype."""
    import matplotlib.pyplot as plt

    data = df[(df["x_name"] == axis) & (df["metric"] == "tokens_per_sec") & ~df["interpreted"]]
    dtypes = sorted(data["dtype"].dropna().unique()) or ["fp32"]
    cells = _cells(data) or _cells(df[df["x_name"] == axis]) or _cells(df) or ["lstm"]
    fig, axes = plt.subplots(len(cells), len(dtypes), figsize=(6 * len(dtypes), 4.2 * len(cells)), squeeze=False)
    for row, cell in zip(axes, cells):
        for ax, dtype in zip(row, dtypes):
            sub = data[(data["dtype"] == dtype) & (data["cell"] == cell)]
            if sub.empty:
                _empty_note(ax, f"no {_title(cell)} {axis} sweep measured here\n"
                                "(Triton under the interpreter is not timed)")
                continue
            for provider in _ordered(sub["provider"]):
                s = sub[sub["provider"] == provider].sort_values("x_value", key=lambda v: v.astype(float))
                x = s["x_value"].astype(float)
                ax.plot(x, s["p50"], marker="o", label=provider + _ran_as(provider, s["fusion"].iloc[0]))
                ax.fill_between(x, s["p20"], s["p80"], alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel({"batch": "batch size B", "hidden": "hidden size H (= input size)",
                           "seq_len": "sequence length T"}[axis])
            ax.set_ylabel("tokens/s (forward+backward, median)")
            ax.set_title(f"{_title(cell)} {dtype}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.suptitle(f"Layer throughput vs {axis}, a row per cell\n{device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Median-latency speedup over torch.nn's layer of the same cell for the named shapes, timed
    providers only; one row per (cell, shape, mode, dtype, provider), ``fusion`` the level that ran."""
    cols = ["cell", "shape", "mode", "dtype", "provider", "fusion", "backend", "rel_err", "latency_ms",
            "speedup_vs_nn"]
    lat = df[(df["metric"] == "latency_ms") & (df["x_name"] == "shape") & ~df["interpreted"]]
    if lat.empty:
        return pd.DataFrame(columns=cols)
    key = ["cell", "shape", "mode", "dtype"]
    nn = lat[lat["provider"] == "nn"].set_index(key)["p50"]
    out = lat.reindex(columns=key + ["provider", "fusion", "backend", "rel_err", "p50"]).rename(
        columns={"p50": "latency_ms"})
    keys = list(zip(*(out[k] for k in key)))
    out["speedup_vs_nn"] = [nn.get(k, np.nan) / v for k, v in zip(keys, out["latency_ms"])]
    order = {c: i for i, c in enumerate(_cells(out))}
    return out[cols].sort_values("cell", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def plot_speedup(df: pd.DataFrame, path: Path, device: str) -> None:
    """Speedup over torch.nn's layer of the same cell: a panel per cell (LSTM first)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    table = speedup_table(df)
    cells = _cells(table) or _cells(df) or ["lstm"]
    fig, axes = plt.subplots(len(cells), 1, figsize=(10, 4.5 * len(cells)), squeeze=False)
    for ax, cell in zip(axes[:, 0], cells):
        sub = table[(table["cell"] == cell) & table["speedup_vs_nn"].notna()].copy()
        if sub.empty:  # also a run of a provider subset without nn: no speedups to draw
            timed = df[(df["cell"] == cell) & (df["metric"] == "latency_ms") & ~df["interpreted"]]
            _empty_note(ax, f"no {_nn_name(cell)} timing to compare with" if not timed.empty
                        and "nn" not in set(timed["provider"]) else "no timed providers")
        else:
            sub["case"] = sub["shape"] + " " + sub["mode"] + " " + sub["dtype"]
            sub["label"] = [p + _ran_as(p, f) for p, f in zip(sub["provider"], sub["fusion"])]
            wide = sub.pivot_table(index="case", columns="label", values="speedup_vs_nn", sort=False)
            labels = dict(zip(sub["label"], sub["provider"]))
            wide = wide[sorted(wide.columns, key=lambda c: _ordered(labels.values()).index(labels[c]))]
            wide.plot.bar(ax=ax, rot=30)
            ax.legend(title="provider", loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}×"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}×"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.2f", fontsize=7)
            ax.set_xlabel("")
            ax.set_ylabel(f"speedup over {_nn_name(cell)} (median latency)")
            ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.set_title(f"{_title(cell)}: speedup over {_nn_name(cell)}", fontsize=10)
    fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_perplexity(df: pd.DataFrame, path: Path, device: str) -> None:
    """A row per cell (LSTM first). Left: train (solid) and validation (dashed) perplexity per
    provider and epoch. Right: each provider's relative gap to torch.nn's training perplexity (same
    cell) at the same epoch, in percent. Epochs on a log axis, so a 10-epoch correctness run and a
    500-epoch run both read."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    all_e2e = df[df["mode"] == "e2e_training"]
    cells = _cells(all_e2e) or _cells(df) or ["lstm"]
    fig, axes = plt.subplots(len(cells), 2, figsize=(12, 4.5 * len(cells)), squeeze=False)
    markers = "os^Dv"
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for (ax, gap_ax), cell in zip(axes, cells):
        data = all_e2e[all_e2e["cell"] == cell]
        if data.empty:
            _empty_note(ax, "no end-to-end training run")
        train = data[data["metric"] == "train_perplexity"].pivot_table(index="x_value", columns="provider",
                                                                       values="p50")
        for k, provider in enumerate(_ordered(data["provider"])):
            sub = data[data["provider"] == provider]
            notes = ["interpreter"] * bool(sub["interpreted"].any()) + [_ran_as(provider, sub["fusion"].iloc[0])[2:-1]]
            tag = f" ({', '.join(n for n in notes if n)})" if any(notes) else ""
            for metric, style in (("train_perplexity", "-"), ("val_perplexity", "--")):
                s = sub[sub["metric"] == metric].sort_values("x_value")
                if not s.empty:  # markers of different shapes and sizes keep overlapping curves visible
                    x = s["x_value"].astype(float)
                    ax.plot(x, s["p50"], style, marker=markers[k % 5], markersize=9 - 1.5 * k,
                            markevery=_log_markevery(x), fillstyle="none",
                            label=f"{provider}{tag} {'train' if metric.startswith('train') else 'validation'}")
            if "nn" in train and provider in train and provider != "nn":
                gap = ((train[provider] / train["nn"] - 1) * 100).dropna()
                gap_ax.plot(gap.index.astype(float), gap.values, marker=markers[k % 5], markersize=4,
                            markevery=_log_markevery(gap.index.astype(float)), label=provider)
        for a in (ax, gap_ax):
            a.set_xscale("log")
            a.xaxis.set_major_formatter(plain)
            a.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(int(v))[0] in "25" else ""))
            a.set_xlabel("epoch (log scale)")
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
        if not data.empty:
            ax.legend(fontsize=7)
        ax.set_title(f"{_title(cell)} char LM on The Time Machine, identical weights and data", fontsize=10)
        gap_ax.axhline(1.0, color="red", linewidth=0.8, linestyle=":")
        gap_ax.axhline(-1.0, color="red", linewidth=0.8, linestyle=":", label="±1%")
        gap_ax.set_ylabel(f"training perplexity vs {_nn_name(cell)} (%)")
        gap_ax.set_title(f"{_title(cell)}: gap to {_nn_name(cell)} at the same epoch", fontsize=10)
        gap_ax.grid(True, which="both", alpha=0.3)
        gap_ax.legend(fontsize=8)
    fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_markevery(x: pd.Series) -> list[int]:
    """Indices of about 12 points spread evenly on a log axis (every point for short runs)."""
    values = np.asarray(x, dtype=float)
    if len(values) <= 12:
        return list(range(len(values)))
    targets = np.geomspace(values.min(), values.max(), 12)
    return sorted({int(np.abs(values - t).argmin()) for t in targets})


def varlen_table(df: pd.DataFrame) -> pd.DataFrame:
    """Variable-length latency per (mode, dtype, T, provider), timed runs only, with the speedup
    over nn.LSTM on the PackedSequence (``speedup_vs_nn``) and the latency ratio to our own padded
    run with lengths on the same data (``ratio_vs_triton_padded``; ≤ 1.2 is the target)."""
    cols = ["mode", "dtype", "T", "provider", "latency_ms", "tokens_per_sec", "speedup_vs_nn",
            "ratio_vs_triton_padded"]
    varlen = df[(df["x_name"] == "varlen_T") & ~df["interpreted"]]
    lat = varlen[varlen["metric"] == "latency_ms"]
    if lat.empty:
        return pd.DataFrame(columns=cols)
    out = lat[["mode", "dtype", "T", "provider", "p50"]].rename(columns={"p50": "latency_ms"}).copy()
    tok = varlen[varlen["metric"] == "tokens_per_sec"].set_index(["mode", "dtype", "T", "provider"])["p50"]
    keys = list(zip(out["mode"], out["dtype"], out["T"]))
    out["tokens_per_sec"] = [tok.get((*k, p), np.nan) for k, p in zip(keys, out["provider"])]
    by = out.set_index(["mode", "dtype", "T", "provider"])["latency_ms"]
    out["speedup_vs_nn"] = [by.get((*k, "nn"), np.nan) / v for k, v in zip(keys, out["latency_ms"])]
    out["ratio_vs_triton_padded"] = [v / by.get((*k, "triton-padded"), np.nan) for k, v in zip(keys, out["latency_ms"])]
    return out[cols].sort_values(["mode", "dtype", "T"], kind="stable").reset_index(drop=True)


def plot_varlen(df: pd.DataFrame, path: Path, device: str) -> None:
    """One row per mode × dtype: real-token throughput vs T per provider (left) and the speedup
    over nn.LSTM on the PackedSequence (right). Interpreted runs are left out."""
    import matplotlib.pyplot as plt

    table = varlen_table(df)
    panels = sorted(set(zip(table["mode"], table["dtype"]))) or [("forward_backward", "fp32")]
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 3.8 * len(panels)), squeeze=False)
    for (mode, dtype), (tput, speed) in zip(panels, axes):
        sub = table[(table["mode"] == mode) & (table["dtype"] == dtype)]
        if sub.empty:
            ran = df[df["x_name"] == "varlen_T"]
            _empty_note(tput, "no variable-length run timed here\n" + (
                "(Triton under the interpreter is not timed)" if not ran.empty
                else "(it runs nn.LSTM's packed path: LSTM runs only)"))
            _empty_note(speed, "no speedups without timings")
            continue
        for provider in _ordered(sub["provider"]):
            s = sub[sub["provider"] == provider].sort_values("T")
            style = "--" if provider.endswith("padded") else "-"
            tput.plot(s["T"], s["tokens_per_sec"], style, marker="o", label=provider)
            speed.plot(s["T"], s["speedup_vs_nn"], style, marker="o", label=provider)
        for ax, ylabel in ((tput, "real tokens/s (median)"), (speed, "speedup over nn.LSTM packed")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("T (lengths uniform in [T/4, T])")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{mode} {dtype}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        speed.axhline(1.0, color="black", linewidth=0.8)
    fig.suptitle(f"Variable-length batches (padded providers: dashed) — {device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- summary


def _row_cells(grp: pd.DataFrame, providers: list[str], fmt) -> list[str]:
    """A table row's cells: ``fmt(provider, row)`` of each provider's row in ``grp``, '—' where it has none."""
    rows = [grp[grp["provider"] == provider] for provider in providers]
    return ["—" if row.empty else fmt(provider, row.iloc[0]) for provider, row in zip(providers, rows)]


def varlen_summary(df: pd.DataFrame) -> list[str]:
    """summary.md lines for the variable-length benchmark (LSTM only: part of the LSTM section): at
    the largest timed T, per mode and dtype, each provider's latency with its speedup over nn packed
    and (Triton) its ratio to our padded run; interpreted providers' worst error. Empty when nothing
    variable-length ran."""
    varlen = df[df["x_name"] == "varlen_T"]
    if varlen.empty:
        return []
    first = varlen.iloc[0]
    B, I, H = (int(first[k]) for k in ("B", "I", "H"))
    lines = [f"### Variable-length batches (LSTM only; B={B}, I={I}, H={H}, lengths uniform in "
             "[T/4, T], seeded; tokens/s counts real tokens)", ""]
    table = varlen_table(df)
    if not table.empty:
        T = int(table["T"].max())
        at = table[table["T"] == T]
        providers = _ordered(at["provider"])
        lines += [f"At T={T}: median latency (speedup over nn.LSTM packed; Triton: latency ÷ triton-padded's).",
                  "", "| mode | dtype | " + " | ".join(providers) + " |", "|---|---|" + "---:|" * len(providers)]
        def fmt(provider: str, r) -> str:
            ratio = f", {r.ratio_vs_triton_padded:.2f} of padded" if provider.startswith("triton-") and \
                provider != "triton-padded" and not math.isnan(r.ratio_vs_triton_padded) else ""
            return f"{latency(r.latency_ms)} ({_fmt(r.speedup_vs_nn, '.2f', suffix='×')}{ratio})"

        for (mode, dtype), grp in at.groupby(["mode", "dtype"], sort=False):
            lines.append(f"| {mode} | {dtype} | " + " | ".join(_row_cells(grp, providers, fmt)) + " |")
        lines.append("")
    interp = varlen[varlen["interpreted"] & (varlen["metric"] == "max_rel_err")]
    checked = varlen[varlen["metric"] == "max_rel_err"].groupby("provider")["p50"].max()
    lines += ["Every variable-length run was checked against float64 nn.LSTM on the PackedSequence "
              "(worst relative error: " + ", ".join(f"{p} {checked[p]:.1e}" for p in _ordered(checked.index))
              + ")" + (f"; under the Triton interpreter (correctness only): {', '.join(_ordered(interp['provider']))}"
                       if not interp.empty else "") + ".", ""]
    return lines



def headline_table(df: pd.DataFrame, check_epochs: int | None = None, cell: str | None = None) -> pd.DataFrame:
    """Per provider of ``cell`` (None: every e2e row, for JSON with one cell): epochs, e2e tokens/s,
    speedups over nn and naive, final perplexities, the training perplexity at epoch
    ``check_epochs`` and the largest relative gap to nn's training perplexity over epochs
    1..check_epochs (``ppl_gap_vs_nn``) and over every shared epoch (``ppl_gap_vs_nn_all``), and the
    fusion level that ran (``fusion``). ``check_epochs`` None: the shortest run's length."""
    e2e = df[df["mode"] == "e2e_training"]
    if cell is not None:
        e2e = e2e[e2e["cell"] == cell]
    rows = []
    for provider in _ordered(e2e["provider"]):
        sub = e2e[e2e["provider"] == provider]
        by = {m: sub[sub["metric"] == m].sort_values("x_value") for m in ("train_perplexity", "val_perplexity",
                                                                         "tokens_per_sec")}
        curve = by["train_perplexity"].set_index(by["train_perplexity"]["x_value"].astype(int))["p50"]
        rows.append({
            "provider": provider, "fusion": sub["fusion"].iloc[0], "interpreted": bool(sub["interpreted"].any()),
            "epochs": int(curve.index.max()),
            "tokens_per_sec": float(by["tokens_per_sec"]["p50"].median()),
            "train_perplexity": float(curve.iloc[-1]),
            "val_perplexity": float(by["val_perplexity"]["p50"].iloc[-1]) if len(by["val_perplexity"]) else np.nan,
            "_train_curve": curve,
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    window = int(check_epochs) if check_epochs else int(table["epochs"].min())
    table["check_epochs"] = window
    table["train_perplexity_at_check"] = [float(c.get(window, np.nan)) for c in table["_train_curve"]]
    timed = table.set_index("provider")["tokens_per_sec"].where(~table.set_index("provider")["interpreted"])
    for ref in ("nn", "naive"):
        base = timed.get(ref, np.nan)
        table[f"speedup_vs_{ref}"] = [t / base if not i else np.nan
                                      for t, i in zip(table["tokens_per_sec"], table["interpreted"])]
    nn_curve = table.set_index("provider")["_train_curve"].get("nn")

    def gap(curve: pd.Series, last: int | None) -> float:
        if nn_curve is None:
            return np.nan
        ratio = (curve / nn_curve).dropna()
        if last is not None:
            ratio = ratio[ratio.index <= last]
        return float((ratio - 1).abs().max()) if len(ratio) else np.nan

    table["ppl_gap_vs_nn"] = [gap(c, window) for c in table["_train_curve"]]
    table["ppl_gap_vs_nn_all"] = [gap(c, None) for c in table["_train_curve"]]
    return table.drop(columns="_train_curve")


def _prefixes(e2e: dict) -> list[str]:
    """The prediction prefixes of the e2e runs, first seen first."""
    return list(dict.fromkeys(p for info in e2e.values() for p in info.get("predictions", {})))


def _fmt(value, spec: str, na: str = "—", suffix: str = "") -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return na if missing else format(value, spec) + suffix


def latency(ms: float) -> str:
    """A latency in ms below a second ("41.1 ms"), in seconds from there ("1.44 s", not "1.44e+03 ms")."""
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


def _percent(gap: float) -> str:
    """A relative gap in percent: one decimal, or in e-notation (still percent) where that would
    print as 0.0%; "inf" for a diverged run."""
    if not math.isfinite(gap):
        return str(gap)
    return f"{gap:.1%}" if not 0 < gap < 5e-4 else f"{gap * 100:.1e}%"


def _e2e_section(df: pd.DataFrame, cell: str, runs: dict) -> list[str]:
    """The end-to-end table and the greedy continuations of one cell; ``runs``: provider -> record."""
    check_epochs = next((info["check_epochs"] for info in runs.values() if info.get("check_epochs")), None)
    head = headline_table(df, check_epochs, cell)
    if head.empty:
        return []
    cfg = next(iter(runs.values()))["config"] if runs else {}
    n = int(head["check_epochs"].iloc[0])
    shape = (f"B={cfg['batch_size']}, T={cfg['num_steps']}, H={cfg['hidden_size']}, " if cfg else "")
    lines = [f"### End-to-end char-LM training ({shape}fp32, identical weights and data order)", "",
             "| provider | epochs | tokens/s | speedup vs nn | speedup vs naive | train perplexity | "
             f"validation perplexity | train perplexity at epoch {n} | "
             f"max relative perplexity gap vs nn ({'epoch 1' if n == 1 else f'epochs 1–{n}'}) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in head.itertuples():
        tok = "interpreter" if r.interpreted else _fmt(r.tokens_per_sec, ",.0f")
        lines.append(f"| {r.provider}{_ran_as(r.provider, r.fusion)} | {r.epochs} | {tok} | "
                     f"{_fmt(r.speedup_vs_nn, '.2f', suffix='×')} | "
                     f"{_fmt(r.speedup_vs_naive, '.2f', suffix='×')} | {r.train_perplexity:.3f} | "
                     f"{_fmt(r.val_perplexity, '.2f')} | {_fmt(r.train_perplexity_at_check, '.3f')} | "
                     f"{'—' if r.provider == 'nn' else _fmt(r.ppl_gap_vs_nn, '.1e')} |")
    longer = head[(head["epochs"] > n) & (head["provider"] != "nn") & head["ppl_gap_vs_nn_all"].notna()]
    if not longer.empty:
        lines += ["", f"Past epoch {n} the gap is reported, not asserted (fp32 rounding differences between "
                  "implementations can grow over a long run): largest over all shared epochs "
                  + ", ".join(f"{r.provider} {_percent(r.ppl_gap_vs_nn_all)}" for r in longer.itertuples()) + "."]
    prefixes = _prefixes(runs)
    chars = next((info["predict_chars"] for info in runs.values() if info.get("predict_chars")), 50)
    lines += ["", f"Greedy continuations after training (d2l's `predict`, {chars} characters):", "",
              "| provider | epochs | " + " | ".join(f"'{p}' continues as" for p in prefixes) + " |",
              "|---|---:|" + "---|" * len(prefixes)]
    epochs_of = head.set_index("provider")["epochs"]
    for provider in _ordered(runs):
        predictions = runs[provider].get("predictions", {})
        cells = [f"`{predictions[p]}`" if p in predictions else "—" for p in prefixes]
        label = provider + _ran_as(provider, runs[provider].get("fusion"))
        lines.append(f"| {label} | {epochs_of.get(provider, '—')} | " + " | ".join(cells) + " |")
    return lines + [""]


def _latency_section(df: pd.DataFrame, cell: str) -> list[str]:
    """One layer of ``cell``: median latency per named shape, mode and dtype (timed providers)."""
    speed = speedup_table(df)
    speed = speed[speed["cell"] == cell]
    if speed.empty:
        return []
    providers = _ordered(speed["provider"])
    first = {p: speed[speed["provider"] == p].iloc[0] for p in providers}
    label = {p: p + _ran_as(p, first[p]["fusion"]) + (f" ({first[p]['backend']})" if isinstance(
        first[p]["backend"], str) and first[p]["backend"] else "") for p in providers}
    lines = [f"### One layer, median latency (speedup over {_nn_name(cell)})", "",
             "| shape | mode | dtype | " + " | ".join(label[p] for p in providers)
             + " | largest relative error vs float64 (same order) |",
             "|---|---|---|" + "---:|" * len(providers) + "---|"]
    fmt = lambda _, r: f"{latency(r.latency_ms)} ({_fmt(r.speedup_vs_nn, '.2f', suffix='×')})"
    for (shape, mode, dtype), grp in speed.groupby(["shape", "mode", "dtype"], sort=False):
        lines.append(f"| {shape} | {mode} | {dtype} | " + " | ".join(_row_cells(grp, providers, fmt))
                     + f" | {accuracy_cells(grp, providers)} |")
    return lines + ["", "The error column: each provider's largest relative error over output, final state and "
                    "every gradient against float64 torch.nn (— where the case has none). A — in a latency "
                    "column: the profile did not run that provider there (peers run at the profile's peer "
                    "shapes and modes only; pytest's skip lines give each reason).", ""]


def _checks_line(df: pd.DataFrame, cell: str) -> list[str]:
    """Which interpreted Triton providers of ``cell`` were checked, their worst error, and the
    level each ran where it was not the one asked for."""
    layer = df[(df["cell"] == cell) & (df["x_name"] != "varlen_T")]
    lines = []
    interp = layer[layer["interpreted"] & (layer["metric"] == "max_rel_err")]
    if not interp.empty:
        worst = interp.groupby("provider")["p50"].max()
        lines.append(f"Interpreted Triton providers were checked against float64 {_nn_name(cell)} in the same run "
                     "(worst relative error: " + ", ".join(f"{p} {worst[p]:.1e}" for p in _ordered(worst.index))
                     + ").")
    triton = layer[layer["provider"].str.startswith("triton-") & layer["fusion"].notna()]
    moved = sorted({(p, f) for p, f in zip(triton["provider"], triton["fusion"]) if _ran_as(p, f)},
                   key=lambda pf: PROVIDER_ORDER.index(pf[0]) if pf[0] in PROVIDER_ORDER else 99)
    if moved:
        lines.append("Levels that ran another one (the library's choice for this cell and shape): "
                     + ", ".join(f"{p} ran {f}" for p, f in moved) + ".")
    return lines + [""] if lines else []


def write_summary(df: pd.DataFrame, e2e: dict, path: Path, skipped_peers: dict[str, str] | None = None,
                  notes: tuple[dict, dict[str, str]] | None = None) -> str:
    """summary.md: the machine, then a section per cell (LSTM first): end-to-end training, one-layer
    latency, correctness; the variable-length benchmark (LSTM only) in the LSTM's section.
    ``e2e``: load_long_table's records keyed by (cell, provider) (a bare provider key reads as LSTM);
    ``skipped_peers``: {"cell/provider": reason} of the peers that did not run (load_skipped_peers);
    ``notes``: load_run_notes' machine and per-cell profile notes (default: the e2e records')."""
    runs_by_cell: dict[str, dict] = {}
    for key, info in e2e.items():
        cell, provider = key if isinstance(key, tuple) else ("lstm", key)
        runs_by_cell.setdefault(cell, {})[provider] = info
    run_machine, plans = notes or ({}, {})
    machine = run_machine or (next(iter(e2e.values()))["machine"] if e2e else {})
    lines = ["# lstm-triton benchmark summary", ""]
    if machine:
        get = lambda key: machine.get(key, "?")  # noqa: E731
        interpreter = "ON (Triton rows are correctness runs, not timings)" if machine.get("interpreter") else "off"
        lines += [f"Measured on **{get('device')}** — torch {get('torch')}, triton {get('triton')}, "
                  f"cuDNN {get('cudnn')}, CUDA {get('cuda')}; Triton interpreter {interpreter}.", ""]
    cells = sorted(set(_cells(df)) | set(runs_by_cell),
                   key=lambda c: (CELL_ORDER.index(c) if c in CELL_ORDER else 99, c))
    if cells:
        lines += ["Cells: " + ", ".join(_title(c) for c in cells) + " — a section each; every provider is "
                  "checked against float64 torch.nn of the same cell in the same run, and speedups are over "
                  "torch.nn's layer of that cell.", ""]
    for cell in cells:
        lines += [f"## {_title(cell)}", ""]
        plan = plans.get(cell) or next((info.get("cell_plan") for info in runs_by_cell.get(cell, {}).values()
                                        if info.get("cell_plan")), "")
        if plan:
            lines += [plan, ""]
        lines += _e2e_section(df, cell, runs_by_cell.get(cell, {}))
        lines += _latency_section(df, cell)
        lines += precision_line(df, cell)
        lines += skipped_peers_lines(skipped_peers or {}, cell)
        lines += _checks_line(df, cell)
        lines += first_call_section(df, cell)
        lines += robustness_section(df, cell)
        if cell == "lstm":
            lines += varlen_summary(df)
    text = "\n".join(lines)
    path.write_text(text)
    return text


def build_reports(json_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write results.csv, the PNG plots and summary.md into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, e2e = load_long_table(json_path)
    device = str(df["device"].dropna().iloc[0]) if df["device"].notna().any() else "unknown device"
    paths = {"csv": out / "results.csv", "summary": out / "summary.md"}
    df.to_csv(paths["csv"], index=False)
    for axis in ("batch", "hidden", "seq_len"):
        paths[f"sweep_{axis}"] = out / f"throughput_vs_{axis}.png"
        plot_sweep(df, axis, paths[f"sweep_{axis}"], device)
    paths["speedup"] = out / "speedup_vs_nn.png"
    plot_speedup(df, paths["speedup"], device)
    paths["varlen"] = out / "varlen_throughput.png"
    plot_varlen(df, paths["varlen"], device)
    paths["perplexity"] = out / "perplexity.png"
    plot_perplexity(df, paths["perplexity"], device)
    write_summary(df, e2e, paths["summary"], load_skipped_peers(json_path), load_run_notes(json_path))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build CSV, plots and summary.md from pytest-benchmark JSON")
    parser.add_argument("json", help="file written by pytest --benchmark-json")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    args = parser.parse_args(argv)
    try:
        json.loads(Path(args.json).read_text())["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as err:  # a one-line usage error, not a traceback
        parser.error(f"json: expected a file written by pytest --benchmark-json, could not read {args.json} "
                     f"({type(err).__name__}: {err})")
    paths = build_reports(args.json, args.out)
    print(paths["summary"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
