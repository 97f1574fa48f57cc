"""Every launch runs on its tensors' device.

Triton launches a kernel on the *current* CUDA device and that device's current stream, whatever
device its pointer arguments live on. A layer on ``cuda:1`` while ``cuda:0`` is current would
otherwise run on GPU 0 with GPU 1's addresses (and the persistent level would zero its barrier
counters on one device's stream and read them from another). :func:`on_tensor_device` makes the
tensors' device current (``torch.cuda.device``), so the launch, the allocations and the copies
around it all use that device and its current stream.

The guard records the device it was entered with (:func:`guarded_device`), so a test on the CPU can
check that every launch happens inside one, on its tensors' device.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import torch

_entered = threading.local()


def guarded_device() -> torch.device | None:
    """The device of the innermost active guard in this thread, or None outside every guard."""
    stack = getattr(_entered, "stack", None)
    return stack[-1] if stack else None


def _device_context(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def on_device(device: torch.device | str):
    """Make ``device`` current for the launches inside (a no-op context on the CPU)."""
    device = torch.device(device)
    stack = _entered.__dict__.setdefault("stack", [])
    stack.append(device)
    try:
        with _device_context(device):
            yield device
    finally:
        stack.pop()


def on_tensor_device(launcher):
    """Decorator for a host launcher: run it with the device of its first tensor argument current."""

    @functools.wraps(launcher)
    def guarded(*args, **kwargs):
        device = next((a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if device is None:
            raise TypeError(f"{launcher.__name__}: no tensor argument to take the device from")
        with on_device(device):
            return launcher(*args, **kwargs)

    return guarded
