"""make bench's choices (bench/selection.py): a bad, empty or empty-handed --profile/--cells/--providers
is one line naming the option, from ``python -m bench.run`` (argparse, exit 2) and from ``pytest
bench`` (a usage error), never a collection traceback or a run that measures nothing."""

import pytest

from bench.selection import ALL_PROVIDERS, SelectionError, resolve, resolve_providers


@pytest.mark.parametrize(("profile", "cells", "providers", "option"), [
    ("cpu", "", None, "--cells"),
    ("cpu", "lstm,foo", None, "--cells"),
    ("cpu", None, "", "--providers"),
    ("cpu", None, "nn,bogus", "--providers"),
    ("huge", None, None, "--profile"),
    ("cpu", "gru", "nn-padded,triton-padded", "--providers"),  # variable-length only, and no LSTM: nothing runs
])
def test_a_bad_or_empty_choice_names_its_option(profile, cells, providers, option):
    with pytest.raises(SelectionError) as err:
        resolve(profile, cells, providers)
    assert err.value.option == option and str(err.value).startswith(f"{option}: ") and "\n" not in str(err.value)


def test_a_good_choice_resolves_nn_first_and_in_cell_order():
    selection = resolve("tiny", "gru,lstm", "triton-step,nn")
    assert selection.cells == ("lstm", "gru") and selection.providers == ("nn", "triton-step")
    assert resolve_providers(None)[0] == "nn" and set(resolve_providers(None)) == set(ALL_PROVIDERS)
    assert {c.cell for c in selection.e2e_cases()} == {"lstm", "gru"} and selection.varlen_cases()
    assert not resolve("tiny", "gru", "nn").varlen_cases()  # the variable-length benchmark is the LSTM's


def test_an_empty_case_list_is_skipped_with_its_reason():
    from bench.conftest import _why_no_case

    gru_compiled = resolve("tiny", "gru", "compiled")
    assert "lstm is among the cells" in _why_no_case("varlen_case", gru_compiled)
    assert _why_no_case("e2e_case", gru_compiled) == "no char-LM provider among compiled"


def test_bench_run_refuses_in_one_line_with_exit_2(capsys, monkeypatch, tmp_path):
    from bench import run

    def no_benchmarks(args):  # were the choice let through, the whole profile would run here
        raise AssertionError(f"pytest.main ran: {args}")

    monkeypatch.setattr(run.pytest, "main", no_benchmarks)
    main = run.main
    with pytest.raises(SystemExit) as exit_:
        main(["--profile", "cpu", "--cells", "", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].endswith("error: --cells: cells must be a comma-separated subset of "
                                                      "lstm, gru, rnn, rnn_relu, got ''")


def test_pytest_bench_refuses_before_collection():
    """bench/conftest.py's pytest_configure turns a bad choice into pytest's usage error (one
    "ERROR: --bench-…" line, exit 4), named with pytest's option; a good one is stashed for the
    collection hooks. (The hook is called directly: a pytest subprocess would cost ~8 CPU-s.)"""
    from types import SimpleNamespace

    from bench.conftest import SELECTION, pytest_configure

    def config(**options):
        given = {"--bench-profile": "tiny", "--bench-cells": None, "--bench-providers": None, **options}
        return SimpleNamespace(getoption=given.__getitem__, stash={})

    with pytest.raises(pytest.UsageError) as err:
        pytest_configure(config(**{"--bench-providers": "bogus"}))
    assert str(err.value) == (f"--bench-providers: expected a comma-separated subset of {', '.join(ALL_PROVIDERS)}, "
                              "got 'bogus'")
    with pytest.raises(pytest.UsageError, match=r"^--bench-profile: must be one of auto, gpu, cpu, tiny, got 'huge'$"):
        pytest_configure(config(**{"--bench-profile": "huge"}))
    good = config(**{"--bench-cells": "gru"})
    pytest_configure(good)
    assert good.stash[SELECTION].cells == ("gru",)
