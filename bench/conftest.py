"""pytest-benchmark set-up for the suite: profile option, skipping rules, shared fixtures.

    pytest bench --benchmark-only [--bench-profile auto|gpu|cpu|tiny] --benchmark-json out.json
    pytest bench --benchmark-disable --bench-profile tiny     # CI: run every path once, untimed

Without --benchmark-only or --benchmark-disable, every benchmark is skipped.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel is imported

from bench.cases import CELLS  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from bench.selection import ALL_PROVIDERS, Selection, SelectionError, resolve  # noqa: E402

SKIPPED_PEERS = pytest.StashKey[dict]()  # (cell, provider) -> why a peer did not run: benchmark.json


def pytest_addoption(parser):
    group = parser.getgroup("lstm-triton bench")
    group.addoption("--bench-profile", default="auto", help="auto (gpu if CUDA else cpu), gpu, cpu or tiny")
    group.addoption("--bench-providers", default=None,
                    help=f"comma-separated providers of {', '.join(ALL_PROVIDERS)} (default: all; nn-padded and "
                         "triton-padded: variable-length benchmark only)")
    group.addoption("--bench-cells", default=None,
                    help=f"comma-separated cells of {', '.join(CELLS)} (default: the profile's, lstm,gru,rnn; "
                         "rnn is tanh; the variable-length benchmark runs when lstm is among them)")


SELECTION = pytest.StashKey[Selection]()


def pytest_configure(config):
    """Resolve --bench-profile/--bench-cells/--bench-providers once, before collection: a bad or
    empty choice is a usage error naming the option (one line), not a collection error per file."""
    try:
        config.stash[SELECTION] = resolve(config.getoption("--bench-profile"), config.getoption("--bench-cells"),
                                          config.getoption("--bench-providers"))
    except SelectionError as err:
        raise pytest.UsageError(f"--bench-{err.option.removeprefix('--')}: {err.detail}") from None


def pytest_generate_tests(metafunc):
    selection = metafunc.config.stash[SELECTION]
    for fixture, cases in (("layer_case", selection.layer_cases), ("varlen_case", selection.varlen_cases),
                           ("e2e_case", selection.e2e_cases)):
        if fixture in metafunc.fixturenames:
            chosen = cases()
            if chosen:
                metafunc.parametrize(fixture, chosen, ids=[c.id for c in chosen])
            else:  # one skipped entry saying why, instead of pytest's "got empty parameter set"
                metafunc.parametrize(fixture, [pytest.param(None, marks=pytest.mark.skip(
                    reason=_why_no_case(fixture, selection)))], ids=["none"])


def _why_no_case(fixture: str, selection: Selection) -> str:
    if fixture == "varlen_case" and "lstm" not in selection.cells:
        return "the variable-length benchmark times nn.LSTM's packed path: it runs when lstm is among the cells"
    kind = {"layer_case": "one-layer", "varlen_case": "variable-length", "e2e_case": "char-LM"}[fixture]
    return f"no {kind} provider among {', '.join(selection.providers)}"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark-only", False) or config.getoption("--benchmark-disable", False):
        return
    skip = pytest.mark.skip(reason="benchmarks run with `pytest bench --benchmark-only` (or --benchmark-disable)")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def profile(request):
    return request.config.stash[SELECTION].profile


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def machine(device):
    return machine_info(device)


@pytest.fixture(scope="session", autouse=True)
def cold_inductor_cache(tmp_path_factory):
    """A fresh inductor cache for the session: the compiled peer's first-call column is a cold
    compile, whatever an earlier run left in the machine's default cache."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor_cache"))
    yield
    if previous is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def note_peer_skip(request):
    """``note_peer_skip(cell, provider, reason)``: record why a peer did not run (summary.md lists it)."""
    skipped = request.config.stash.setdefault(SKIPPED_PEERS, {})

    def note(cell: str, provider: str, reason: str) -> None:
        skipped.setdefault(f"{cell}/{provider}", reason)

    return note


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """benchmark.json gains ``skipped_peers``: {"cell/provider": reason} for each peer that did not run."""
    output_json["skipped_peers"] = dict(config.stash.get(SKIPPED_PEERS, {}))
