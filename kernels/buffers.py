"""Output allocation for the launchers, with an opt-in NaN poison for tests.

With poisoning on (``LSTM_TRITON_POISON=1`` or :func:`set_poison`), every buffer a kernel is
meant to fill starts as NaN (integers: -1), so an element a kernel forgets to write fails a
comparison loudly instead of passing with whatever memory held.
"""

import os

import torch

_poison = os.environ.get("LSTM_TRITON_POISON", "") not in ("", "0")


def set_poison(enabled: bool) -> None:
    global _poison
    _poison = bool(enabled)


def poison_enabled() -> bool:
    return _poison


def new_buffer(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.empty``, or NaN-filled when poisoning is on."""
    if not _poison:
        return torch.empty(shape, dtype=dtype, device=device)
    fill = float("nan") if dtype.is_floating_point else -1
    return torch.full(shape, fill, dtype=dtype, device=device)
