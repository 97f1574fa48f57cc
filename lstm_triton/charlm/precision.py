"""Mixed-precision training of the char LM: ``torch.autocast`` at bf16 or fp16, loss scaling for fp16.

The weights, gradients and SGD stay fp32; autocast runs the forward and the loss with the matmuls
(and the recurrent layer, as nn.LSTM does) in the lower precision (PyTorch's automatic mixed
precision recipe, ``torch.amp``). fp16's 5 exponent bits underflow small gradients, so its
backward runs on a scaled loss (``torch.amp.GradScaler``): the gradients are unscaled before the
clipping, and a step whose gradients overflowed is skipped while the scale is lowered. bf16 has
fp32's exponent range and needs no scaling.

Whether a dtype runs depends on the device and the layer: torch's CPU autocast takes bf16 and fp16
(torch 2.13), but nn.LSTM's CPU kernel (oneDNN) refuses fp16 autocast, and bf16 autocast on CPUs
without AVX-512 BF16 or AMX (tests/helpers.py, ``nn_lstm_runs_bf16_on_cpu``; nn.GRU, nn.RNN and the
naive layers run both). :func:`check_autocast_runs` finds out once, before training, so that such a
run stops with one line instead of a traceback from inside the first epoch.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

# The --dtype names and what autocast computes in (None: no autocast, plain fp32).
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_dtype(dtype: str) -> None:
    """ValueError naming ``dtype`` unless it is one of :data:`DTYPES`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, dtype=...)`` for ``bf16``/``fp16``; a no-op for ``fp32`` (so an
    fp32 run computes exactly what it computed before autocast existed here)."""
    check_dtype(dtype)
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler:
    """A loss scaler, enabled for ``fp16`` only (disabled, every call is a pass-through)."""
    check_dtype(dtype)
    return torch.amp.GradScaler(device.type, enabled=dtype == "fp16")


def check_autocast_runs(model: nn.Module, device: torch.device, dtype: str, what: str) -> None:
    """ValueError (one line, naming ``dtype`` and ``what``, e.g. "impl 'nn' cell 'lstm'") if
    ``model`` cannot run under ``dtype`` autocast on ``device``: autocast refusing the dtype there,
    or on the CPU a one-token forward raising (oneDNN's LSTM without the kernel). On CUDA every
    cell runs both dtypes (cuDNN's RNNs compute fp16 under either), so no forward is spent there."""
    check_dtype(dtype)
    if DTYPES[dtype] is None:
        return
    try:
        with contextlib.ExitStack() as stack:
            with warnings.catch_warnings():  # the reason goes into the one-line error, not a warning line
                warnings.simplefilter("ignore")
                stack.enter_context(autocast(device, dtype))
            if not torch.is_autocast_enabled(device.type):  # torch turned autocast off (it warned)
                raise RuntimeError(f"autocast on {device.type} does not take {dtype}")
            if device.type == "cpu":
                tokens = torch.zeros((1, 1), dtype=torch.long, device=device)
                model(tokens, model.begin_state(1, device))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"dtype {dtype!r} cannot run {what} on {device}: {reason.split('. ')[0]}") from None
