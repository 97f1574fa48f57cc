"""Setting torch's fp32-precision switches for a test, and putting every one of them back.

torch ≥ 2.9 keeps a tree of settings (generic → cuda → rnn/conv/matmul; ``'none'`` inherits from
the parent) plus the legacy ``allow_tf32`` flags, and raises when code reads a legacy flag that
disagrees with the new settings. So the snapshot is taken and restored through the new API only,
parents before children (setting a parent overwrites its children).
"""

from contextlib import contextmanager

import torch

# (object, attribute), parents first
_SWITCHES = (
    (torch.backends, "fp32_precision"),  # generic / all
    (torch.backends.cudnn, "fp32_precision"),  # cuda / all
    (torch.backends.cudnn.rnn, "fp32_precision"),
    (torch.backends.cudnn.conv, "fp32_precision"),
    (torch.backends.cuda.matmul, "fp32_precision"),
)


@contextmanager
def fp32_precision(rnn: str | None = None, *, cudnn_enabled: bool | None = None):
    """Inside: ``torch.backends.cudnn.rnn.fp32_precision = rnn`` (when given) and cuDNN on/off
    (when given); on exit every switch in ``_SWITCHES`` and ``cudnn.enabled`` as before."""
    saved = [getattr(obj, name) for obj, name in _SWITCHES]
    saved_enabled = torch.backends.cudnn.enabled
    try:
        if rnn is not None:
            torch.backends.cudnn.rnn.fp32_precision = rnn
        if cudnn_enabled is not None:
            torch.backends.cudnn.enabled = cudnn_enabled
        yield
    finally:
        torch.backends.cudnn.enabled = saved_enabled
        for (obj, name), value in zip(_SWITCHES, saved):
            setattr(obj, name, value)
