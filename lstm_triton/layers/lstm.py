"""``lstm_triton.LSTM``: a drop-in for ``torch.nn.LSTM`` running on the fused Triton kernels,
and ``lstm_triton.lstm``: the functional form for one layer.

The module *is* an ``nn.LSTM`` (subclass): same constructor, parameter names, shapes, default
initialisation and ``state_dict``; it only replaces the computation. Extra keyword arguments:
``fusion`` (``auto``, ``cell``, ``step``, ``persistent``) and ``backend`` (``auto``, ``triton``,
``torch``). Variable-length batches run on the kernels: PackedSequence input, and padded input with
``lengths`` (``forward(input, hx, lengths=...)``; ``packed.py`` says how). ``proj_size > 0`` runs on
the kernels at the cell and step levels (``auto`` and ``persistent`` resolve to step; the debug
log says so).

Behaves as nn.LSTM where users notice: an empty batch gives empty results and zero gradients, T = 0
is nn.LSTM's RuntimeError; results own their storage; under autocast the results come out in
nn.LSTM's dtypes (usually the autocast dtype; ``rnn_base.autocast_dtype`` gives CPU's exceptions);
devices and dtypes are checked before any kernel runs, with nn.LSTM's exception types. The recurrence is a PyTorch
operator (``ops.py``): ``torch.compile`` (no graph break; compile with ``dynamic=True`` or
``torch._dynamo.mark_dynamic(x, time_dim)`` for one graph across sequence lengths),
``torch.export``, ``torch.jit.trace`` and ``torch.func`` (grad, vjp, jacrev) work, as do gradients of
gradients (``create_graph=True``: computed by plain torch ops, see ``autograd.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import (
    ops,  # noqa: F401  (registers torch.ops.lstm_triton.*)
    packed,
)
from .autograd import run_layer
from .backend import BACKENDS, FUSIONS, check_choice
from .dynamo_rnn import allow_rnn_in_dynamo
from .rnn_base import (  # noqa: F401  (re-exported: other modules import them from here)
    EMPTY_SEQUENCE,
    FusedRNNMixin,
    _check_dtypes,
    _check_parameter_devices,
    _check_state,
    _no_autocast,
    _reverse,
    autocast_cast,
    autocast_dtype,
    autocast_projection_dtype,
    prepare_functional,
)

allow_rnn_in_dynamo()  # torch.compile traces through our layers (dynamo_rnn.py says why and when)


def _run_layer(fusion, x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend, lengths=None, w_hr=None):
    """One direction of one layer, time-major; returns ``(y (T,B,P), h_n (B,P), c_n (B,H))``.
    ``lengths (B,)`` int64 on x's device, or None for full-length rows; ``w_hr (P,H)`` or None (P = H)."""
    if backend == "torch":
        weights = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else []) + ([w_hr] if w_hr is not None else [])
        if lengths is not None and x.shape[1] > 0:
            y, (h, c) = packed.torch_layer(x, (h0, c0), weights, b_ih is not None, lengths)
            return y, h, c
        y, h, c = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, b_ih is not None,
                                 1, 0.0, False, False, False)
        return y, h[0], c[0]
    return run_layer(fusion, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, w_hr)  # the level is resolved in the operator


def _check_two_states(hx) -> None:
    # More than two states: ATen's message. Fewer, or a bare tensor, fail on indexing (IndexError)
    # as in nn.LSTM.forward, which reads hx[0] and hx[1] before ATen sees them.
    if isinstance(hx, (tuple, list)) and len(hx) > 2:
        raise RuntimeError("lstm expects two hidden states")  # nn.LSTM's message


def lstm(
    input: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    hx: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    weight_hr: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    fusion: str = "auto",
    backend: str = "auto",
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer, nn.LSTM's math and weight layout, differentiable in every argument.

    ``input (T, B, I)``; ``weight_ih (4H, I)``, ``weight_hh (4H, H)``, biases ``(4H,)`` with gate
    rows [i, f, g, o]; ``hx = (h0, c0)``, each ``(B, H)``, zeros if None. ``weight_hr (P, H)``: nn.LSTM's
    projection (proj_size P < H): then ``weight_hh`` is ``(4H, P)``, h0, h_n and the output have P
    features (cell or step level; ``auto``/``persistent`` resolve to step, reason in the debug log).
    ``lengths`` (B integers in [0, T]; optional; a list or CPU tensor costs no host read and reaches
    the device once per pattern, a tensor already on the GPU is checked with one read): row b runs only its first
    ``lengths[b]`` steps — past them its output is 0, its state stays as it was (h_n, c_n are taken
    at its own last step) and no gradient flows through the padding, as ``nn.LSTM`` on the packed
    equivalent.
    Returns ``(output (T, B, H), (h_n (B, H), c_n (B, H)))`` in the input's dtype, each owning its
    storage; under autocast in nn.LSTM's dtypes (the autocast dtype, float16 on CUDA; on CPU with
    ``weight_hr`` or an fp16 input, c_n in ``promote_types(c0's dtype, autocast dtype)``: see
    :func:`lstm_triton.layers.rnn_base.autocast_dtype`). B = 0 gives empty results.

    Raises ValueError for a bad ``fusion``/``backend``/``lengths``, an input that is not 3-D, I = 0 or
    H = 0 (as nn.LSTM's constructor), ``backend='triton'`` where it cannot run; RuntimeError, with
    nn.LSTM's messages, for T = 0, wrong shapes, and states or weights on another device or of
    another dtype than the input.
    """
    check_choice("fusion", fusion, FUSIONS)
    check_choice("backend", backend, BACKENDS)
    if input.dim() != 3:
        raise ValueError(f"lstm: expected input of shape (T, B, I), got {input.dim()}D")
    T, B, I = input.shape
    if weight_ih.dim() != 2 or weight_hh.dim() != 2:
        raise RuntimeError(f"lstm: weight_ih and weight_hh must be 2-D, got {weight_ih.dim()}-D and "
                           f"{weight_hh.dim()}-D")
    if weight_hr is not None and weight_hr.dim() != 2:
        raise RuntimeError(f"lstm: weight_hr must be (P, H), got {tuple(weight_hr.shape)}")
    P = weight_hh.shape[1] if weight_hr is None else weight_hr.shape[0]
    H = P if weight_hr is None else weight_hr.shape[1]
    if weight_ih.shape != (4 * H, I) or weight_hh.shape != (4 * H, P):
        raise RuntimeError(
            f"lstm: weight_ih must be (4H, I) = {(4 * H, I)} and weight_hh (4H, {'H' if weight_hr is None else 'P'}) "
            f"= {(4 * H, P)}, got {tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}"
        )
    if weight_hr is not None and not 0 < P < H:
        raise RuntimeError(f"lstm: weight_hr must be (P, H) with 0 < P < H, got {tuple(weight_hr.shape)}")
    if I == 0:
        raise ValueError("input_size must be greater than zero")
    if H == 0:
        raise ValueError("hidden_size must be greater than zero")
    weights = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh,
               "weight_hr": weight_hr}
    _check_two_states(hx)
    hx = (None, None) if hx is None else hx
    input, (h0, c0), weights, chosen, lengths, ac = prepare_functional(
        input, weights, {"hx[0]": (hx[0], (B, P)), "hx[1]": (hx[1], (B, H))}, 4 * H, fusion, backend, lengths)
    w_ih, w_hh, b_ih, b_hh, w_hr = weights.values()
    with _no_autocast(input, ac):
        y, h, c = _run_layer(fusion, input, h0, c0, w_ih, w_hh, b_ih, b_hh, chosen, lengths, w_hr)
    projected = autocast_projection_dtype(input, "LSTM", w_hr is not None)
    if projected is not None and ac:  # nn.LSTM's projection under CPU autocast
        y, h = y.to(projected), h.to(projected)
    return y, (h, c)


class LSTM(FusedRNNMixin, nn.LSTM):
    """``torch.nn.LSTM`` with the recurrence on fused Triton kernels (see the module docstring)."""

    def _check_hx_count(self, hx) -> None:
        _check_two_states(hx)

    def _wrap(self, hx) -> tuple:
        return (hx[0], hx[1])

    def _unwrap(self, states: tuple):
        return states

    def _check_state_dims(self, states: tuple, batched: bool) -> None:
        want = 3 if batched else 2
        if states[0].dim() != want or states[1].dim() != want:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {want}-D but got "
                f"({states[0].dim()}-D, {states[1].dim()}-D) tensors"
            )

    def _expected_state_sizes(self, input: torch.Tensor) -> list:
        return [self.get_expected_hidden_size(input, None), self.get_expected_cell_size(input, None)]

    def _zero_states(self, B: int, like: torch.Tensor):
        """nn.LSTM's default ``(h0 (L·D, B, P or H), c0 (L·D, B, H))``."""
        directions = 2 if self.bidirectional else 1
        shape = (self.num_layers * directions, B)
        h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (torch.zeros(*shape, h_size, dtype=like.dtype, device=like.device),
                torch.zeros(*shape, self.hidden_size, dtype=like.dtype, device=like.device))

    def _run_kernel_layer(self, seq, states: tuple, weights: dict, sfx: str, lengths):
        w_hr = weights[f"weight_hr{sfx}"] if self.proj_size > 0 else None
        y, h, c = _run_layer(self.fusion, seq, *states, *self._layer_weights(weights, sfx), "triton", lengths, w_hr)
        return y, (h, c)
