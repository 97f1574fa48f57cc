"""fp32 dots follow the switch nn.LSTM follows: cuDNN's RNN TF32 setting (TF32 by default).

Everywhere: the chosen ``input_precision`` for each setting, and that the step and persistent
launchers pass it to their kernels (a constexpr: a new setting selects the other compiled
variant). On CUDA also the numbers: TF32 within 1e-3 of float64, IEEE within 1e-5.
"""

import subprocess
import sys

import pytest
import torch
from torch import nn

import lstm_triton
from lstm_triton.kernels import lstm_persistent, lstm_step
from lstm_triton.kernels.launch_config import dot_precision, nn_lstm_uses_tf32

from .helpers import DEVICE, rel_err
from .precision_flags import fp32_precision


def test_the_default_is_tf32_like_cudnn():
    """In a fresh process (no switch touched, unlike under conftest on CUDA) fp32 dots are TF32,
    as cuDNN's RNNs are by default; the matmul switch, which defaults to IEEE, is not the one."""
    code = ("import torch\n"
            "from lstm_triton.kernels.launch_config import dot_precision\n"
            "print(dot_precision(torch.float32), torch.backends.cuda.matmul.fp32_precision)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    ours, matmul = out.stdout.split()
    assert ours == "tf32" and matmul != "tf32"


@pytest.mark.parametrize("rnn,expected", [("tf32", "tf32"), ("ieee", "ieee")])
def test_fp32_follows_the_cudnn_rnn_setting(rnn, expected):
    with fp32_precision(rnn):
        assert dot_precision(torch.float32) == expected
        assert nn_lstm_uses_tf32() == (expected == "tf32")
        assert dot_precision(torch.bfloat16) == dot_precision(torch.float16) == "tf32"


def test_the_legacy_allow_tf32_switch_flips_it_both_ways():
    with fp32_precision():
        torch.backends.cudnn.allow_tf32 = False
        assert dot_precision(torch.float32) == "ieee"
        torch.backends.cudnn.allow_tf32 = True
        assert dot_precision(torch.float32) == "tf32"


def test_unset_rnn_setting_inherits_from_cuda_then_generic():
    """'none' defers to torch.backends.cudnn.fp32_precision, then torch.backends.fp32_precision."""
    with fp32_precision():
        torch.backends.fp32_precision = "ieee"
        torch.backends.cudnn.fp32_precision = "tf32"
        torch.backends.cudnn.rnn.fp32_precision = "none"
        assert dot_precision(torch.float32) == "tf32"
        torch.backends.cudnn.fp32_precision = "none"
        torch.backends.cudnn.rnn.fp32_precision = "none"
        assert dot_precision(torch.float32) == "ieee"


def test_the_matmul_switch_matters_only_without_cudnn():
    """nn.LSTM without cuDNN multiplies with cuBLAS, which follows the matmul setting."""
    with fp32_precision("ieee"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        assert dot_precision(torch.float32) == "ieee"
    with fp32_precision("tf32", cudnn_enabled=False):
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        assert dot_precision(torch.float32) == "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        assert dot_precision(torch.float32) == "tf32"


@pytest.mark.parametrize("rnn", ["tf32", "ieee", "tf32"], ids=["tf32", "then-ieee", "then-tf32-again"])
def test_launchers_pass_the_current_setting_to_their_kernels(rnn):
    with fp32_precision(rnn):
        _, step_meta = lstm_step._grid_and_meta(3, 20, torch.float32)
        _, persistent_meta = lstm_persistent._launch_meta(3, 20, torch.float32, torch.device(DEVICE))
    assert step_meta["PRECISION"] == persistent_meta["PRECISION"] == rnn


def _fp32_errors(fusion: str, rnn: str) -> float:
    """Largest relative error (output, h_n, c_n, input and weight gradients) of an fp32 layer
    against nn.LSTM in float64, with cuDNN's RNN precision set to ``rnn``."""
    gen = torch.Generator().manual_seed(0)
    T, B, I, H = 6, 8, 32, 64
    ref = nn.LSTM(I, H, dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
    ours = lstm_triton.LSTM(I, H, fusion=fusion, backend="triton", device=DEVICE)
    ours.load_state_dict(ref.state_dict())
    x64 = torch.randn(T, B, I, generator=gen, dtype=torch.float64, requires_grad=True)
    x = x64.detach().float().to(DEVICE).requires_grad_()
    with fp32_precision(rnn):
        y, (h, c) = ours(x)
        y.sum().backward()
    ry, (rh, rc) = ref(x64)
    ry.sum().backward()
    pairs = [(y, ry), (h, rh), (c, rc), (x.grad, x64.grad), (ours.weight_hh_l0.grad, ref.weight_hh_l0.grad)]
    return max(rel_err(a, b) for a, b in pairs)


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="the interpreter's fp32 dots are exact whatever the setting")
@pytest.mark.parametrize("fusion", ["step", "persistent"])
def test_tf32_and_ieee_results_on_cuda(fusion):
    ieee = _fp32_errors(fusion, "ieee")
    tf32 = _fp32_errors(fusion, "tf32")
    again = _fp32_errors(fusion, "ieee")  # the IEEE variant again after TF32 (constexpr switch)
    assert ieee <= 1e-5 and again <= 1e-5, (ieee, again)
    assert tf32 <= 1e-3, tf32
    assert tf32 > 2 * ieee, f"TF32 no less accurate than IEEE ({tf32} vs {ieee}): the setting was not applied"
