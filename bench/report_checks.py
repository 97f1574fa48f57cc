"""summary.md's accuracy, first-call and robustness sections, and the peers that did not run.

Built from the long table of bench/report.py (its ``rel_err``, ``first_call_s`` and
``rel_err_x100`` rows of the layer cases) and the ``skipped_peers`` record of benchmark.json
(bench/conftest.py). Robustness verdicts: ``NaN/inf`` (or the exception a provider raised),
``beyond tolerance`` where the error on inputs x ×100 exceeds both the dtype's tolerance and twice
torch.nn's own error on the same inputs (saturated gates make fp32 error grow for every
implementation; twice nn's is what gpu_check's accuracy rule allows), else ``ok``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd


def load_skipped_peers(json_path: str | Path) -> dict[str, str]:
    """``{"cell/provider": reason}`` of the peers that did not run ({} for older JSON)."""
    return dict(json.loads(Path(json_path).read_text()).get("skipped_peers", {}))


def _label(provider: str, backend) -> str:
    return f"{provider} ({backend})" if isinstance(backend, str) and backend else provider


def _named(df: pd.DataFrame, cell: str, metric: str, timed_only: bool) -> pd.DataFrame:
    rows = df[(df["cell"] == cell) & (df["metric"] == metric) & (df["x_name"] == "shape")]
    return rows[~rows["interpreted"].astype(bool)] if timed_only else rows


def accuracy_cells(grp: pd.DataFrame, providers: list[str]) -> str:
    """The latency table's accuracy column: each provider's worst relative error vs float64
    torch.nn (output, final state, every gradient), in the table's provider order."""
    errs = grp.set_index("provider")["rel_err"] if "rel_err" in grp else pd.Series(dtype=float)
    return " / ".join("—" if p not in errs or pd.isna(errs[p]) else f"{float(errs[p]):.1e}" for p in providers)


def _interpreter_left_out(df: pd.DataFrame, cell: str, metric: str) -> list[str]:
    """A closing note where ``cell`` had Triton under the interpreter but the table has no row of it."""
    interp = df[(df["cell"] == cell) & df["interpreted"].astype(bool) & (df["x_name"] == "shape")]
    if interp.empty:
        return [""]
    if metric == "first_call_s":  # the table is timed providers only, always
        what = "its clock is no performance figure"
    elif interp[interp["metric"] == metric].empty:
        what = "this profile leaves that check to a GPU run"
    else:
        return [""]
    return ["", f"Triton under the interpreter is not in this table ({what}).", ""]


def first_call_section(df: pd.DataFrame, cell: str) -> list[str]:
    """Seconds from constructing each timed provider to its first forward+backward finished
    (compilation included), per named shape; interpreted runs are left out."""
    rows = _named(df, cell, "first_call_s", timed_only=True)
    if rows.empty:
        return []
    from bench.report import _ordered

    providers = _ordered(rows["provider"])
    backends = rows.drop_duplicates("provider").set_index("provider")["backend"]
    lines = ["### First call: construction to first forward+backward finished (compilation included)", "",
             "| shape | dtype | " + " | ".join(_label(p, backends.get(p)) for p in providers) + " |",
             "|---|---|" + "---:|" * len(providers)]
    for (shape, dtype), grp in rows.groupby(["shape", "dtype"], sort=False):
        by = grp.set_index("provider")["p50"]
        lines.append(f"| {shape} | {dtype} | " + " | ".join(
            f"{by[p]:.3g} s" if p in by else "—" for p in providers) + " |")
    return lines + _interpreter_left_out(df, cell, "first_call_s")


def robustness_table(df: pd.DataFrame, cell: str) -> pd.DataFrame:
    """Per provider of ``cell`` and robustness shape: error on ordinary inputs, on x ×100, torch.nn's
    own error on x ×100 and the verdict."""
    cols = ["shape", "dtype", "provider", "backend", "interpreted", "rel_err", "rel_err_x100", "nn_x100", "verdict"]
    x100 = df[(df["cell"] == cell) & (df["metric"] == "rel_err_x100") & (df["x_name"] == "shape")]
    if x100.empty:
        return pd.DataFrame(columns=cols)
    out = x100.rename(columns={"p50": "rel_err_x100"}).copy()
    nn = out[out["provider"] == "nn"].set_index(["shape", "dtype"])["rel_err_x100"]
    out["nn_x100"] = [nn.get(k, math.nan) for k in zip(out["shape"], out["dtype"])]
    tol = [json.loads(c).get("tolerance", 0.0) if isinstance(c, str) else 0.0 for c in out["config"]]

    def verdict(err, nn_err, t) -> str:
        if not math.isfinite(err):
            return "NaN/inf or error"
        bound = max(t, 2 * nn_err) if math.isfinite(nn_err) else t
        return "ok" if err <= bound else "beyond tolerance"

    out["verdict"] = [verdict(e, n, t) for e, n, t in zip(out["rel_err_x100"], out["nn_x100"], tol)]
    return out[cols].reset_index(drop=True)


def robustness_section(df: pd.DataFrame, cell: str) -> list[str]:
    """The robustness table of ``cell`` (inputs x ×100)."""
    table = robustness_table(df, cell)
    if table.empty:
        return []
    from bench.report import _ordered

    order = {p: i for i, p in enumerate(_ordered(table["provider"]))}
    table = table.sort_values("provider", key=lambda c: c.map(order), kind="stable")
    lines = ["### Robustness: inputs x ×100 (forward+backward vs float64 torch.nn)", "",
             "| shape | provider | error (x ×1) | error (x ×100) | verdict |", "|---|---|---:|---:|---|"]
    for r in table.itertuples():
        tag = " (interpreter)" if r.interpreted else ""
        x1 = "—" if pd.isna(r.rel_err) else f"{float(r.rel_err):.1e}"
        x100 = "NaN/inf" if not math.isfinite(r.rel_err_x100) else f"{r.rel_err_x100:.1e}"
        lines.append(f"| {r.shape} | {_label(r.provider, r.backend)}{tag} | {x1} | {x100} | {r.verdict} |")
    lines += ["", "A verdict is `beyond tolerance` where the error exceeds both the dtype's tolerance and "
              "twice torch.nn's own fp32 error on the same inputs (saturated gates make that grow for "
              "every implementation)."]
    return lines + _interpreter_left_out(df, cell, "rel_err_x100")


def skipped_peers_lines(skipped: dict[str, str], cell: str) -> list[str]:
    """One line naming the peers of ``cell`` that did not run here, each with its reason."""
    mine = {key.split("/", 1)[1]: why for key, why in skipped.items() if key.split("/", 1)[0] == cell}
    if not mine:
        return []
    from bench.report import _ordered

    return ["Peers not run here: " + "; ".join(f"{p} — {mine[p]}" for p in _ordered(mine)) + ".", ""]


def precision_line(df: pd.DataFrame, cell: str) -> list[str]:
    """Which precision every provider of ``cell`` ran in (set explicitly on every provider)."""
    rows = df[(df["cell"] == cell) & (df["x_name"] == "shape")]
    if "precision" not in rows or rows["precision"].dropna().empty:
        return []
    kinds = sorted(rows["precision"].dropna().unique())
    return [f"Precision, set explicitly on every provider: {', '.join(kinds)}.", ""]
