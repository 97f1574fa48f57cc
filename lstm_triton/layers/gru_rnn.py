"""``lstm_triton.GRU`` and ``lstm_triton.RNN``: drop-ins for ``torch.nn.GRU`` / ``torch.nn.RNN``
(subclasses: same constructor, ``nonlinearity`` for RNN, parameter names, init and ``state_dict``)
on the Triton cell kernels, and the functional forms ``lstm_triton.gru`` / ``lstm_triton.rnn``.

Everything ``lstm_triton.LSTM`` offers carries over (``rnn_base.py``): ``fusion`` / ``backend``,
layers, bidirectional, batch_first, unbatched input, dropout, autocast, nn's errors, PackedSequence
and ``lengths``. GRU and RNN run at the ``cell``, ``step`` and ``persistent`` levels (the same kernel
skeletons as the LSTM's, the cell type a compile-time constant); ``auto`` picks ``persistent`` when its
launch fits, else ``step``, by the LSTM's rule (the debug log says why). The state is one tensor h.

Variable lengths (padded input with ``lengths``, PackedSequence) run on the kernels too: steps past
a row's length get fixed pre-activations (GRU: z = 1 freezes the row; RNN: −inf, whose zero
derivative lets no gradient out) and h_n is gathered at each row's own end (``packed.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.cell_math import CELL_IDS, GATES
from . import rnn_ops  # noqa: F401  (registers torch.ops.lstm_triton.rnn_recurrence*)
from .autograd import input_projection
from .backend import BACKENDS, FUSIONS, check_choice
from .packed import active_steps, last_hidden, mask_padded_steps, torch_layer, zero_padding
from .rnn_autograd import RnnRecurrence
from .rnn_base import FusedRNNMixin, _no_autocast, prepare_functional


def run_rnn_layer(mode: str, fusion: str, x, h0, w_ih, w_hh, b_ih, b_hh, backend: str, lengths=None):
    """One direction of one GRU / RNN layer, time-major: ``x (T,B,I)``, ``h0 (B,H)`` ->
    ``(y (T,B,H), h_n (B,H))``. ``lengths (B,)`` int64 on x's device or None."""
    if backend == "torch":
        weights = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
        if lengths is not None and x.shape[1] > 0:
            y, (h,) = torch_layer(x, (h0,), weights, b_ih is not None, lengths, mode)
            return y, h
        y, h = getattr(torch._VF, mode.lower())(x, h0[None], weights, b_ih is not None, 1, 0.0, False, False, False)
        return y, h[0]
    # b_hh goes to the recurrent side (GRU: b_hn inside r ⊙ (·))
    if lengths is not None:
        active = active_steps(lengths, x.shape[0])
        xp = mask_padded_steps(input_projection(zero_padding(x, active), w_ih, b_ih, None), active, mode)
    else:
        xp = input_projection(x, w_ih, b_ih, None)
    apply = torch.ops.lstm_triton.rnn_recurrence if torch.jit.is_tracing() else RnnRecurrence.apply
    y, _, _ = apply(xp, h0, w_hh, b_hh, mode, fusion)
    if lengths is None:
        return y, y[-1].clone()  # h_n owns its storage
    h_n = last_hidden(y, lengths, h0)  # each row's own last state (an RNN's final step is not)
    return torch.where(active[..., None], y, torch.zeros((), dtype=y.dtype, device=y.device)), h_n


def _functional(mode: str, input, weight_ih, weight_hh, bias_ih, bias_hh, hx, lengths, fusion, backend):
    name = mode.split("_")[0].lower()
    check_choice("fusion", fusion, FUSIONS)
    check_choice("backend", backend, BACKENDS)
    if input.dim() != 3:
        raise ValueError(f"{name}: expected input of shape (T, B, I), got {input.dim()}D")
    T, B, I = input.shape
    G = GATES[CELL_IDS[mode]]
    if weight_ih.dim() != 2 or weight_hh.dim() != 2:
        raise RuntimeError(f"{name}: weight_ih and weight_hh must be 2-D, got {weight_ih.dim()}-D and "
                           f"{weight_hh.dim()}-D")
    H = weight_hh.shape[1]
    if weight_ih.shape != (G * H, I) or weight_hh.shape != (G * H, H):
        raise RuntimeError(f"{name}: weight_ih must be ({G}H, I) = {(G * H, I)} and weight_hh ({G}H, H) = "
                           f"{(G * H, H)}, got {tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}")
    if I == 0:
        raise ValueError("input_size must be greater than zero")
    if H == 0:
        raise ValueError("hidden_size must be greater than zero")
    weights = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
    input, (h0,), weights, chosen, lengths, ac = prepare_functional(input, weights, {"hx": (hx, (B, H))}, G * H,
                                                                   fusion, backend, lengths, mode)
    with _no_autocast(input, ac):
        return run_rnn_layer(mode, fusion, input, h0, *weights.values(), chosen, lengths)


def gru(input: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor | None = None,
        bias_hh: torch.Tensor | None = None, hx: torch.Tensor | None = None, *, lengths=None, fusion: str = "auto",
        backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer, nn.GRU's math and weight layout, differentiable in every argument.

    ``input (T, B, I)``; ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, biases ``(3H,)`` with gate rows
    [r, z, n]; ``hx (B, H)``, zeros if None; ``lengths`` as in :func:`lstm_triton.lstm`. Returns
    ``(output (T, B, H), h_n (B, H))`` in the input's dtype; under autocast in nn.GRU's: float16 on
    CUDA (cuDNN's rule), on CPU ``promote_types(hx's dtype or the input's, autocast dtype)`` (see
    :func:`lstm_triton.layers.rnn_base.autocast_dtype`).

    Raises ValueError for a bad ``fusion``/``backend``/``lengths``, an input that is not 3-D, I = 0 or
    H = 0, ``backend='triton'`` where it cannot run; RuntimeError with nn's messages for T = 0, wrong
    shapes, and states or weights on another device or of another dtype than the input.
    """
    return _functional("GRU", input, weight_ih, weight_hh, bias_ih, bias_hh, hx, lengths, fusion, backend)


def rnn(input: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor | None = None,
        bias_hh: torch.Tensor | None = None, hx: torch.Tensor | None = None, *, nonlinearity: str = "tanh",
        lengths=None, fusion: str = "auto", backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """One Elman RNN layer, h_t = act(x W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh) with ``nonlinearity``
    ``tanh`` or ``relu``: ``weight_ih (H, I)``, ``weight_hh (H, H)``, biases ``(H,)``; otherwise as
    :func:`gru`. ValueError for another ``nonlinearity``."""
    check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
    return _functional(f"RNN_{nonlinearity.upper()}", input, weight_ih, weight_hh, bias_ih, bias_hh, hx, lengths,
                       fusion, backend)


class _SingleState(FusedRNNMixin):
    def _run_kernel_layer(self, seq, states: tuple, weights: dict, sfx: str, lengths):
        y, h = run_rnn_layer(self.mode, self.fusion, seq, states[0], *self._layer_weights(weights, sfx), "triton",
                             lengths)
        return y, (h,)


class GRU(_SingleState, nn.GRU):
    """``torch.nn.GRU`` with the recurrence on Triton kernels (see the module docstring)."""


class RNN(_SingleState, nn.RNN):
    """``torch.nn.RNN`` (``nonlinearity`` tanh or relu) with the recurrence on Triton kernels."""

    _INPUT_DIM_ERROR = "{name}: Expected input to be 2D or 3D, got {dim}D tensor instead"
