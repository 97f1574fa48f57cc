"""The layers need torch and triton (and numpy) only: ``import lstm_triton`` and a layer's forward and
backward work where the application's dependencies (pandas, tqdm) and the benchmarks' (matplotlib)
cannot be imported, and import none of them; the application's names load on first use, or say
which extra to install. The distribution declares it so: those packages are extras.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lstm_triton

EXTRAS_ONLY = ("pandas", "tqdm", "matplotlib")

# Run in a fresh interpreter where the extras' packages cannot be imported (they are installed in the
# test venv): a None in sys.modules is Python's own "not importable" (import raises
# ModuleNotFoundError, importlib.util.find_spec says absent, as for a package not installed).
_WITHOUT_EXTRAS = textwrap.dedent(f"""
    import sys

    BLOCKED = {EXTRAS_ONLY!r}
    sys.modules.update(dict.fromkeys(BLOCKED))
""")


def _run(body: str, without_extras: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = (_WITHOUT_EXTRAS if without_extras else "") + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_the_layers_import_and_train_without_the_extras():
    """And the import leaves torch._dynamo unloaded; its allow_rnn switch is set once it loads
    (dynamo_rnn.py)."""
    done = _run("""
        import sys
        import torch
        import lstm_triton

        # dynamo (~2 CPU-s to import, as much as torch) is not loaded by the import, only when needed
        assert "torch._dynamo" not in sys.modules, "import lstm_triton imported torch._dynamo"
        torch.manual_seed(0)
        patched = lstm_triton.patch(torch.nn.GRU(3, 4), backend="triton")
        for layer in (lstm_triton.LSTM(3, 4, backend="triton"), patched):
            x = torch.randn(2, 2, 3, requires_grad=True)
            layer(x)[0].sum().backward()
            assert x.grad is not None and layer.weight_hh_l0.grad is not None
        # the custom operators' calls load dynamo (torch's own _disable_dynamo wrapper): the switch is on
        assert torch._dynamo.config.allow_rnn
        try:
            lstm_triton.CharLM
        except ModuleNotFoundError as e:
            print("CharLM:", e)
        print("ok")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "ok"
    assert "pip install 'lstm-triton[charlm]'" in done.stdout


def test_importing_the_layers_imports_none_of_the_extras_where_they_are_installed():
    """Beyond what torch and triton import themselves (torch.hub, under torch._dynamo, takes tqdm
    when it is installed)."""
    done = _run(f"""
        import sys
        import torch, torch._dynamo, triton

        theirs = set(sys.modules)
        import lstm_triton

        print(sorted(m for m in set(sys.modules) - theirs if m.split(".")[0] in {EXTRAS_ONLY!r}))
    """, without_extras=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[]"


def test_the_command_without_the_extras_says_which_to_install_in_one_line():
    done = _run("""
        import runpy
        sys.argv = ["lstm-triton", "train", "--help"]
        runpy.run_module("lstm_triton", run_name="__main__")
    """)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("lstm-triton: the command needs the charlm extra (pandas is not installed): "
                           "pip install 'lstm-triton[charlm]'\n")


def test_the_application_names_load_on_first_use():
    import lstm_triton.charlm as charlm
    from lstm_triton.charlm.train import train

    assert lstm_triton.CharLM is charlm.CharLM and lstm_triton.Trainer is charlm.Trainer
    assert lstm_triton.train is train
    assert set(lstm_triton.__all__) <= set(dir(lstm_triton)) | {"CharData", "NaiveLSTM", "TrainConfig",
                                                                   "from_nn_lstm", "predict", "to_nn_lstm"}
    with pytest.raises(AttributeError, match="module 'lstm_triton' has no attribute 'nope'"):
        lstm_triton.nope  # noqa: B018


def test_the_distribution_declares_the_extras():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    core = {req.split(">")[0].split("=")[0].split(";")[0].strip() for req in project["dependencies"]}
    assert core == {"torch", "triton", "numpy"}
    extras = project["optional-dependencies"]
    assert {"pandas", "tqdm"} <= {req.split(">")[0] for req in extras["charlm"]}
    assert "lstm-triton[charlm]" in extras["bench"] and "matplotlib>=3.7" in extras["bench"]
    assert "lstm-triton[charlm,bench]" in extras["dev"]  # make test / make bench install dev
