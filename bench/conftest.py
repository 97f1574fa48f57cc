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

from bench.cases import CELLS, e2e_cases, layer_cases, resolve_cells, resolve_profile, varlen_cases  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from bench.providers import LAYER_PROVIDERS, PEER_PROVIDERS, PROVIDERS  # noqa: E402
from bench.varlen import VARLEN_PROVIDERS  # noqa: E402

ALL_PROVIDERS = tuple(dict.fromkeys(PROVIDERS + VARLEN_PROVIDERS + PEER_PROVIDERS))
SKIPPED_PEERS = pytest.StashKey[dict]()  # (cell, provider) -> why a peer did not run: benchmark.json


def pytest_addoption(parser):
    group = parser.getgroup("lstm-triton bench")
    group.addoption("--bench-profile", default="auto", help="auto (gpu if CUDA else cpu), gpu, cpu or tiny")
    group.addoption("--bench-providers", default=",".join(ALL_PROVIDERS),
                    help="comma-separated providers (nn-padded and triton-padded: variable-length benchmark only)")
    group.addoption("--bench-cells", default=None,
                    help=f"comma-separated cells of {', '.join(CELLS)} (default: the profile's, lstm,gru,rnn; "
                         "rnn is tanh; the variable-length benchmark runs when lstm is among them)")


def _profile(config):
    return resolve_profile(config.getoption("--bench-profile"))


def _providers(config):
    chosen = [p.strip() for p in config.getoption("--bench-providers").split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(ALL_PROVIDERS))
    if unknown:
        raise pytest.UsageError(f"--bench-providers: unknown {unknown}; choose from {', '.join(ALL_PROVIDERS)}")
    # nn first: the others' end-to-end perplexity is compared with it in the same run.
    return sorted(chosen, key=lambda p: (p != "nn", ALL_PROVIDERS.index(p)))


def _cells(config):
    try:
        return resolve_cells(_profile(config), config.getoption("--bench-cells"))
    except ValueError as err:
        raise pytest.UsageError(f"--bench-cells: {err}") from None


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "layer_case" in metafunc.fixturenames:
        cases = layer_cases(_profile(config), [p for p in _providers(config) if p in LAYER_PROVIDERS],
                            _cells(config), peers=PEER_PROVIDERS)
        metafunc.parametrize("layer_case", cases, ids=[c.id for c in cases])
    if "varlen_case" in metafunc.fixturenames:  # nn.LSTM's packed path: LSTM only
        providers = [p for p in _providers(config) if p in VARLEN_PROVIDERS] if "lstm" in _cells(config) else []
        cases = varlen_cases(_profile(config), providers)
        metafunc.parametrize("varlen_case", cases, ids=[c.id for c in cases])
    if "e2e_case" in metafunc.fixturenames:
        cases = e2e_cases(_profile(config), [p for p in _providers(config) if p in PROVIDERS], _cells(config))
        metafunc.parametrize("e2e_case", cases, ids=[c.id for c in cases])


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark-only", False) or config.getoption("--benchmark-disable", False):
        return
    skip = pytest.mark.skip(reason="benchmarks run with `pytest bench --benchmark-only` (or --benchmark-disable)")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def profile(request):
    return _profile(request.config)


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
