"""The one place that decides which backend (triton / torch) and fusion level run an LSTM call.

backend ``auto``: Triton on CUDA tensors — under a ROCm torch AMD GPUs are "cuda" devices too, and
the kernels compile through Triton's ROCm backend (launch rules: kernels/targets.py) — and on CPU
tensors when the Triton interpreter is on (TRITON_INTERPRET=1); torch's own kernel (cuDNN or
MIOpen / ATen) otherwise. ``triton`` on a CPU tensor
without the interpreter is a ValueError. Every decision is logged at DEBUG level on the
``lstm_triton`` logger with its reason.

During ONNX export (either exporter: ``torch.onnx.is_in_onnx_export()``) every request resolves to
``torch``: an ONNX graph cannot hold a Triton kernel, and torch's recurrence is what both exporters
turn into ONNX's own LSTM / GRU / RNN operators, as they do for nn's layers.

A configuration the kernels cannot compute correctly never runs: it is refused with an error
that says what to use instead, or routed to a level that can (with the reason in the log).
Under the interpreter there is no bf16 ``tl.dot`` (numpy has no bfloat16), so bf16 at the step
and persistent levels goes to cell, whose recurrent GEMM is torch's.
"""

from __future__ import annotations

import logging

import torch

from ..kernels.cell_math import CELL_IDS, GATES
from ..kernels.launch_config import interpreter_on, persistent_config
from .export import in_onnx_export

log = logging.getLogger("lstm_triton")


def _debug(msg: str, *args) -> None:
    # torch.compile cannot trace a logging call (it would break the graph around the layer); the
    # decision is the same when compiled, and logged by the eager call it was traced from.
    if not torch.compiler.is_compiling():
        log.debug(msg, *args)

BACKENDS = ("auto", "triton", "torch")
FUSIONS = ("auto", "cell", "step", "persistent")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve ``auto``; raise ValueError when ``triton`` cannot run on this device/dtype. ``torch``
    whatever was requested while an ONNX exporter traces the call (see the module docstring)."""
    check_choice("backend", requested, BACKENDS)
    if in_onnx_export():
        _debug("backend %s -> torch: ONNX export (exported as ONNX's recurrent operator, as nn's layers are)",
               requested)
        return "torch"
    triton_ok = device.type == "cuda" or (device.type == "cpu" and interpreter_on())
    if requested == "triton":
        if not triton_ok:
            raise ValueError(
                f"backend='triton' needs a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors), got device {device}"
            )
        if dtype not in TRITON_DTYPES:
            raise ValueError(
                f"backend='triton' supports float32, bfloat16 and float16 inputs, got {dtype}; "
                "use backend='torch' or backend='auto' (torch's kernel) for it"
            )
        return "triton"
    if requested == "torch":
        return "torch"
    if not triton_ok:
        _debug("backend auto -> torch: %s tensor and the Triton interpreter is off", device.type)
        return "torch"
    if dtype not in TRITON_DTYPES:
        _debug("backend auto -> torch: dtype %s has no Triton kernel", dtype)
        return "torch"
    _debug("backend auto -> triton: %s tensor", device.type)
    return "triton"


def choose_fusion(requested: str, batch: int, hidden: int, dtype: torch.dtype, device: torch.device, *,
                  arch: int | None = None, sms: int | None = None, projected: bool = False,
                  cell: str = "LSTM") -> str:
    """Resolve ``fusion`` for one layer call of shape (batch, hidden).

    ``cell`` (nn.RNNBase.mode: LSTM, GRU, RNN_TANH, RNN_RELU): every cell type has every level; the
    persistent launch is sized for its gate count (the W_hh slice a program keeps on chip).

    ``projected`` (nn.LSTM's proj_size > 0): ``cell`` or ``step`` as asked; ``auto`` and
    ``persistent`` give ``step`` (the persistent kernel keeps an H-wide recurrent state on chip; the
    projection needs a whole row of it before the next step).

    ``auto``: persistent when its launch fits (H ≤ 1024, the W_hh slice within the architecture's
    on-chip budget, hidden slices × batch tiles ≤ SM count), else step. ``persistent`` for a size it
    cannot hold falls back to step. ``arch``/``sms`` describe a GPU without having one (tests).
    """
    check_choice("fusion", requested, FUSIONS)
    if dtype == torch.bfloat16 and interpreter_on() and torch.device(device).type == "cpu" and requested != "cell":
        _debug("fusion %s -> cell: bf16 under the Triton interpreter, which has no bf16 tl.dot "
               "(step and persistent would compute wrong numbers)", requested)
        return "cell"
    if projected:
        if requested in ("cell", "step"):
            return requested
        _debug("fusion %s -> step: proj_size > 0 runs at the cell or step level (the persistent kernel has no "
               "projection)", requested)
        return "step"
    if requested in ("cell", "step"):
        return requested
    cfg, reason = persistent_config(batch, hidden, dtype, device, arch=arch, sms=sms, gates=GATES[CELL_IDS[cell]])
    if cfg is not None:
        _debug("fusion %s -> persistent: %s B=%d H=%d %s: %s", requested, cell, batch, hidden, dtype, reason)
        return "persistent"
    _debug("fusion %s -> step: %s B=%d H=%d %s: persistent does not fit (%s)", requested, cell, batch, hidden, dtype,
           reason)
    return "step"
