"""The char LM's training forward through ``torch.compile``.

The compiled module shares the eager module's parameters: training through it updates the eager
module, which stays the one to evaluate, save and resume (a compiled module's ``state_dict`` keys
carry an ``_orig_mod.`` prefix; the eager one's are the checkpoints' keys either way).

torch 2.13 cannot compile a CPU ``nn.LSTM`` for training: dynamo traces oneDNN's LSTM
(``aten.mkldnn_rnn_layer``), and AOTAutograd then fails on the tensors it saves for backward
(``aot_eager``: "expected all tensors_saved_with_vc_check to be Tensors") and inductor on the
operator's outputs (pytorch/pytorch#158007; the fix, pytorch/pytorch#185163, is not released). With
oneDNN switched off during the compiled forward, ``nn.LSTM`` runs ATen's own LSTM, which both
backends compile, to the eager losses within 1e-7 relative (aot_eager: bit for bit). The switch
is on only during the compiled call on the CPU; nn.GRU, nn.RNN and the naive layers compiled with
aot_eager train to the eager losses bit for bit with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

# torch.compile backends torch ships that need nothing more: inductor (fast code; the default) and
# the debugging ones, which check tracing without code generation (aot_eager: forward and backward
# graphs, seconds to compile on a CPU where inductor takes about a minute).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def check_backend(backend: str) -> None:
    """ValueError naming ``compile_backend`` unless it is one of :data:`COMPILE_BACKENDS`."""
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile_backend must be one of {', '.join(COMPILE_BACKENDS)}, got {backend!r}")


@contextlib.contextmanager
def onednn_off() -> Iterator[None]:
    """oneDNN (``torch.backends.mkldnn``) disabled inside, restored after."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def compile_for_training(model: nn.Module, backend: str, device: torch.device) -> Callable:
    """``torch.compile(model, backend=backend)`` as a function of ``(tokens, state)`` like ``model``'s
    forward. The tokens go in contiguous: the iterators' batches are views whose row stride changes
    with each epoch's random offset, and a new stride is a recompile (a minute with inductor on a
    CPU). On the CPU it runs with oneDNN off (module docstring). ValueError for an unknown backend."""
    check_backend(backend)
    compiled = torch.compile(model, backend=backend)
    context = onednn_off if device.type == "cpu" else contextlib.nullcontext

    def forward(tokens: torch.Tensor, state=None):
        with context():
            return compiled(tokens.contiguous(), state)

    forward.compiled = compiled  # the OptimizedModule, for inspection
    return forward
