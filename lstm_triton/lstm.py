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
is nn.LSTM's RuntimeError; results own their storage; autocast casts input, states and weights to
the autocast dtype (float64 excepted) and the results come out in it; devices and dtypes are
checked before any kernel runs, with nn.LSTM's exception types. The recurrence is a PyTorch
operator (``ops.py``): ``torch.compile`` (no graph break; compile with ``dynamic=True`` or
``torch._dynamo.mark_dynamic(x, time_dim)`` for one graph across sequence lengths),
``torch.export``, ``torch.jit.trace`` and ``torch.func`` (grad, vjp, jacrev) work, as do gradients of
gradients (``create_graph=True``: computed by plain torch ops, see ``autograd.py``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import (
    ops,  # noqa: F401  (registers torch.ops.lstm_triton.*)
    packed,
)
from .autograd import run_layer
from .backend import BACKENDS, FUSIONS, check_choice, choose_backend

# torch.compile: dynamo refuses to trace any module that is an nn.RNN/GRU/LSTM (a blanket guard,
# torch._dynamo.config.allow_rnn, off by default) and would break the graph around this layer, which
# *is* an nn.LSTM. Its computation is traceable (custom operators with fake implementations), so the
# switch is turned on. Side effect: plain nn.LSTMs in compiled models are traced too (torch's
# experimental path; on CPU it compiles with eager, aot_eager and inductor in torch 2.13).
torch._dynamo.config.allow_rnn = True

EMPTY_SEQUENCE = "Expected sequence length to be larger than 0 in RNN"  # nn.LSTM's RuntimeError


def _check_state(name: str, state: torch.Tensor, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Shape and device of one state tensor; RuntimeError with nn.LSTM's message."""
    if tuple(state.shape) != shape:
        raise RuntimeError(f"Expected {name} size {shape}, got {list(state.shape)}")
    if state.device != x.device:
        raise RuntimeError(
            "Input and hidden tensors are not at the same device, found input tensor at "
            f"{x.device} and hidden tensor at {state.device}"
        )


def _check_parameter_devices(x: torch.Tensor, weights) -> None:
    """nn.LSTM's RuntimeError when a parameter is not on the input's device (checked before a
    backend is chosen: the input's device alone does not decide where the layer can run)."""
    for w in weights:
        if w is not None and w.device != x.device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found input tensor at "
                f"{x.device} and parameter tensor at {w.device}"
            )


def _check_dtypes(x: torch.Tensor, states: dict, weights: dict) -> None:
    """Every state and parameter in the input's dtype (after autocast's casts); RuntimeError otherwise."""
    for name, t in states.items():
        if t.dtype != x.dtype:
            raise RuntimeError(f"{name} dtype ({t.dtype}) does not match input dtype ({x.dtype})")
    for name, w in weights.items():
        if w is not None and w.dtype != x.dtype:
            raise RuntimeError(f"parameter {name} dtype ({w.dtype}) does not match input dtype ({x.dtype})")


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives an nn.LSTM on ``x``'s device, or None when autocast is off there.

    CPU: the autocast dtype. CUDA: nn.LSTM runs cuDNN, whose autocast rule (ATen's
    ``_cudnn_rnn_cast_reflatten``) casts to float16 whatever the autocast dtype, bf16 included.
    """
    kind = x.device.type
    if kind not in ("cpu", "cuda") or not torch.is_autocast_enabled(kind):
        return None
    if kind == "cuda" and torch.backends.cudnn.enabled and torch.backends.cudnn.is_available():
        return torch.float16
    return torch.get_autocast_dtype(kind)


def autocast_cast(t: torch.Tensor | None, dtype: torch.dtype | None):
    """nn.LSTM's autocast rule (ATen's lower-precision cast): every floating tensor except float64
    goes to the autocast dtype; differentiable, so gradients come back in the tensor's own dtype."""
    if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _no_autocast(x: torch.Tensor, active: bool):
    # The casts are done: torch's ops inside the layer must not cast again (e.g. the projection's fp32 sum).
    return torch.autocast(x.device.type, enabled=False) if active else contextlib.nullcontext()


def _run_layer(fusion, x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend, lengths=None, w_hr=None):
    """One direction of one layer, time-major; returns ``(y (T,B,P), h_n (B,P), c_n (B,H))``.
    ``lengths (B,)`` int64 on x's device, or None for full-length rows; ``w_hr (P,H)`` or None (P = H)."""
    if backend == "torch":
        weights = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else []) + ([w_hr] if w_hr is not None else [])
        if lengths is not None and x.shape[1] > 0:
            return packed.torch_layer(x, h0, c0, weights, b_ih is not None, lengths)
        y, h, c = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, b_ih is not None,
                                 1, 0.0, False, False, False)
        return y, h[0], c[0]
    return run_layer(fusion, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, w_hr)  # the level is resolved in the operator


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Time reversal of ``x (T,B,*)``: whole rows, or each row within its own length."""
    return x.flip(0) if lengths is None else packed.reverse_padded(x, lengths)


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
    ``lengths`` (B integers in [0, T], any device; optional): row b runs only its first
    ``lengths[b]`` steps — past them its output is 0, its state stays as it was (h_n, c_n are taken
    at its own last step) and no gradient flows through the padding, as ``nn.LSTM`` on the packed
    equivalent.
    Returns ``(output (T, B, H), (h_n (B, H), c_n (B, H)))`` in the input's dtype (under autocast:
    the autocast dtype, as nn.LSTM), each owning its storage. B = 0 gives empty results.

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
    if weight_hr is not None and weight_hr.dim() != 2:
        raise RuntimeError(f"lstm: weight_hr must be (P, H), got {tuple(weight_hr.shape)}")
    P = (weight_hh.shape[1] if weight_hh.dim() == 2 else -1) if weight_hr is None else weight_hr.shape[0]
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
    _check_parameter_devices(input, weights.values())
    _check_two_states(hx)
    if hx is None:
        hx = (input.new_zeros(B, P), input.new_zeros(B, H))
    _check_state("hx[0]", hx[0], input, (B, P))
    _check_state("hx[1]", hx[1], input, (B, H))
    if T == 0:
        raise RuntimeError(EMPTY_SEQUENCE)
    ac = autocast_dtype(input)
    input, h0, c0 = (autocast_cast(t, ac) for t in (input, *hx))
    weights = {k: autocast_cast(w, ac) for k, w in weights.items()}
    _check_dtypes(input, {"hx[0]": h0, "hx[1]": c0}, weights)
    w_ih, w_hh, b_ih, b_hh, w_hr = weights.values()
    if (b_ih is None) != (b_hh is None):
        zero = torch.zeros(4 * H, dtype=input.dtype, device=input.device)
        b_ih = zero if b_ih is None else b_ih
        b_hh = zero if b_hh is None else b_hh
    chosen = choose_backend(backend, input.device, input.dtype)
    if lengths is not None:
        lengths = packed.check_lengths(lengths, T, B, input.device)
    with _no_autocast(input, ac is not None):
        y, h, c = _run_layer(fusion, input, h0, c0, w_ih, w_hh, b_ih, b_hh, chosen, lengths, w_hr)
    return y, (h, c)


class LSTM(nn.LSTM):
    """``torch.nn.LSTM`` with the recurrence on fused Triton kernels (see the module docstring)."""

    def __init__(self, *args, fusion: str = "auto", backend: str = "auto", **kwargs):
        check_choice("fusion", fusion, FUSIONS)
        check_choice("backend", backend, BACKENDS)
        super().__init__(*args, **kwargs)
        self.fusion = fusion
        self.backend = backend

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fusion={self.fusion!r}, backend={self.backend!r}"

    def forward(self, input, hx=None, lengths=None):
        """``nn.LSTM.forward``, plus ``lengths`` for padded input: a 1-D sequence of B integers in
        [0, T] (see :func:`lstm`); the output stays padded (zeros past each length).
        PackedSequence input gives PackedSequence output, as nn.LSTM."""
        is_packed = isinstance(input, PackedSequence)
        data = input.data if is_packed else input
        if lengths is not None and (is_packed or data.dim() != 3):
            raise ValueError("lengths: pass it with a padded, batched 3-D input tensor (a PackedSequence carries "
                             "its own lengths)")
        _check_two_states(hx)
        if data.dtype != self.weight_ih_l0.dtype:
            self.check_input(data, None)  # nn.LSTM's own dtype error, before any backend talk
        _check_parameter_devices(data, self._flat_weights)
        ac = autocast_dtype(data)
        dtype = data.dtype if ac is None or data.dtype == torch.float64 else ac
        backend = choose_backend(self.backend, data.device, dtype)
        if lengths is not None:
            batch_dim = 0 if self.batch_first else 1
            lengths = packed.check_lengths(lengths, data.size(1 - batch_dim), data.size(batch_dim), data.device)
        if backend == "torch":
            if lengths is None:
                return super().forward(input, hx)
            if hx is None:
                hx = self._zero_states(data.size(0 if self.batch_first else 1), data)
            return packed.torch_module_forward(super().forward, input, hx, lengths, self.batch_first)
        if is_packed:
            padded, lengths = packed.unpack(input)
            output, states = self._triton_forward(padded, hx, ac, lengths, batch_first=False)
            return packed.repack(output, lengths, input), states
        return self._triton_forward(input, hx, ac, lengths)

    def _triton_forward(self, input: torch.Tensor, hx, ac: torch.dtype | None, lengths=None, batch_first=None):
        # Argument checks mirror nn.LSTM.forward, so errors have the same types and messages.
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_first = self.batch_first if batch_first is None else batch_first
        batch_dim = 0 if batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        B = input.size(batch_dim)
        if hx is None:
            hx = self._zero_states(B, input)
        else:
            want = 3 if batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            if not batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        self.check_forward_args(input, hx, None)
        _check_state("hidden[0]", hx[0], input, tuple(self.get_expected_hidden_size(input, None)))
        _check_state("hidden[1]", hx[1], input, tuple(self.get_expected_cell_size(input, None)))
        if input.size(1 - batch_dim) == 0:
            raise RuntimeError(EMPTY_SEQUENCE)
        # Autocast: nn.LSTM's rule, every floating tensor but float64 in the autocast dtype.
        input = autocast_cast(input, ac)
        hx = (autocast_cast(hx[0], ac), autocast_cast(hx[1], ac))
        weights = {name: autocast_cast(getattr(self, name), ac) for name in self._flat_weights_names}
        _check_dtypes(input, {"hidden[0]": hx[0], "hidden[1]": hx[1]}, weights)
        with _no_autocast(input, ac is not None):
            output, (h_n, c_n) = self._layers(input.transpose(0, 1) if batch_first else input, hx, weights, lengths)
        output = output.transpose(0, 1) if batch_first else output
        if not batched:
            output = output.squeeze(batch_dim)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _zero_states(self, B: int, like: torch.Tensor):
        """nn.LSTM's default ``(h0 (L·D, B, P or H), c0 (L·D, B, H))``."""
        directions = 2 if self.bidirectional else 1
        shape = (self.num_layers * directions, B)
        h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (torch.zeros(*shape, h_size, dtype=like.dtype, device=like.device),
                torch.zeros(*shape, self.hidden_size, dtype=like.dtype, device=like.device))

    def _layers(self, x: torch.Tensor, hx, weights: dict, lengths=None):
        """All layers and directions on time-major ``x (T,B,I)``; ``(y (T,B,D·H), (h_n, c_n) (L·D,B,H))``.
        With ``lengths (B,)`` the reverse direction starts at each row's own end."""
        directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(directions):
                idx = layer * directions + d
                sfx = f"_l{layer}{'_reverse' if d else ''}"
                w_ih, w_hh = weights[f"weight_ih{sfx}"], weights[f"weight_hh{sfx}"]
                b_ih, b_hh = (weights[f"bias_ih{sfx}"], weights[f"bias_hh{sfx}"]) if self.bias else (None, None)
                seq = _reverse(x, lengths) if d else x  # the reverse direction reads time backwards
                w_hr = weights[f"weight_hr{sfx}"] if self.proj_size > 0 else None
                y, h, c = _run_layer(self.fusion, seq, hx[0][idx], hx[1][idx], w_ih, w_hh, b_ih, b_hh, "triton",
                                     lengths, w_hr)
                outputs.append(_reverse(y, lengths) if d else y)
                h_n.append(h)
                c_n.append(c)
            x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        return x, (torch.stack(h_n), torch.stack(c_n))
