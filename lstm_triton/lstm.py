"""``lstm_triton.LSTM``: a drop-in for ``torch.nn.LSTM`` running on the fused Triton kernels,
and ``lstm_triton.lstm``: the functional form for one layer.

The module *is* an ``nn.LSTM`` (subclass): same constructor, parameter names, shapes, default
initialisation and ``state_dict``; it only replaces the computation. Extra keyword arguments:
``fusion`` (``auto``, ``cell``, ``step``) and ``backend`` (``auto``, ``triton``, ``torch``).
PackedSequence input and ``proj_size > 0`` run on torch's kernel with ``backend='auto'`` and
raise NotImplementedError with ``backend='triton'``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .autograd import FUNCTIONS
from .backend import BACKENDS, FUSIONS, check_choice, choose_backend, choose_fusion, log


def _check_state(name: str, state: torch.Tensor, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(state.shape) != shape:
        raise RuntimeError(f"Expected {name} size {shape}, got {list(state.shape)}")
    if state.device != x.device:
        raise RuntimeError(
            f"Input and hidden tensors are not at the same device, found input tensor at {x.device} "
            f"and {name} tensor at {state.device}"
        )
    if state.dtype != x.dtype:
        raise RuntimeError(f"{name} dtype ({state.dtype}) does not match input dtype ({x.dtype})")


def _run_layer(fusion, x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend):
    """One direction of one layer, time-major; returns ``(y (T,B,H), h_n (B,H), c_n (B,H))``."""
    if backend == "torch":
        weights = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
        y, h, c = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, b_ih is not None,
                                 1, 0.0, False, False, False)
        return y, h[0], c[0]
    T, B, _ = x.shape
    fusion = choose_fusion(fusion, B, w_hh.shape[1], x.dtype, x.device)
    return FUNCTIONS[fusion].apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def lstm(
    input: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    hx: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    fusion: str = "auto",
    backend: str = "auto",
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer, nn.LSTM's math and weight layout, differentiable in every argument.

    ``input (T, B, I)``; ``weight_ih (4H, I)``, ``weight_hh (4H, H)``, biases ``(4H,)`` with gate
    rows [i, f, g, o]; ``hx = (h0, c0)``, each ``(B, H)``, zeros if None.
    Returns ``(output (T, B, H), (h_n (B, H), c_n (B, H)))`` in the input's dtype.
    """
    check_choice("fusion", fusion, FUSIONS)
    if input.dim() != 3:
        raise ValueError(f"lstm: expected input of shape (T, B, I), got {input.dim()}D")
    T, B, I = input.shape
    H = weight_hh.shape[1]
    if weight_ih.shape != (4 * H, I) or weight_hh.shape != (4 * H, H):
        raise RuntimeError(
            f"lstm: weight_ih must be (4H, I) = {(4 * H, I)} and weight_hh (4H, H) = {(4 * H, H)}, "
            f"got {tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}"
        )
    if (bias_ih is None) != (bias_hh is None):
        zero = torch.zeros(4 * H, dtype=input.dtype, device=input.device)
        bias_ih = zero if bias_ih is None else bias_ih
        bias_hh = zero if bias_hh is None else bias_hh
    if hx is None:
        zeros = input.new_zeros(B, H)
        hx = (zeros, zeros)
    _check_state("hx[0]", hx[0], input, (B, H))
    _check_state("hx[1]", hx[1], input, (B, H))
    chosen = choose_backend(backend, input.device, input.dtype)
    y, h, c = _run_layer(fusion, input, hx[0], hx[1], weight_ih, weight_hh, bias_ih, bias_hh, chosen)
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

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if data.dtype != self.weight_ih_l0.dtype:
            self.check_input(data, None)  # nn.LSTM's own dtype error, before any backend talk
        backend = choose_backend(self.backend, data.device, data.dtype)
        if backend == "triton" and (packed or self.proj_size > 0):
            what = "PackedSequence input" if packed else "proj_size > 0"
            if self.backend == "triton":
                raise NotImplementedError(
                    f"lstm_triton.LSTM: {what} is not implemented by the Triton kernels; "
                    "use backend='torch' or backend='auto' (which runs it on torch's kernel)"
                )
            log.debug("backend auto -> torch: %s is not implemented by the Triton kernels", what)
            backend = "torch"
        if backend == "torch":
            return super().forward(input, hx)
        return self._triton_forward(input, hx)

    def _layer_weights(self, layer: int, reverse: bool):
        sfx = f"_l{layer}{'_reverse' if reverse else ''}"
        w_ih, w_hh = getattr(self, f"weight_ih{sfx}"), getattr(self, f"weight_hh{sfx}")
        if self.bias:
            return w_ih, w_hh, getattr(self, f"bias_ih{sfx}"), getattr(self, f"bias_hh{sfx}")
        return w_ih, w_hh, None, None

    def _triton_forward(self, input: torch.Tensor, hx):
        # Argument checks mirror nn.LSTM.forward, so errors have the same types and messages.
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        directions = 2 if self.bidirectional else 1
        B = input.size(batch_dim)
        state_shape = (self.num_layers * directions, B, self.hidden_size)
        if hx is None:
            zeros = torch.zeros(state_shape, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
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
        _check_state("hidden[0]", hx[0], input, state_shape)
        _check_state("hidden[1]", hx[1], input, state_shape)

        x = input.transpose(0, 1) if self.batch_first else input
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(directions):
                idx = layer * directions + d
                seq = x.flip(0) if d else x  # the reverse direction reads time backwards
                y, h, c = _run_layer(self.fusion, seq, hx[0][idx], hx[1][idx], *self._layer_weights(layer, d == 1),
                                     "triton")
                outputs.append(y.flip(0) if d else y)
                h_n.append(h)
                c_n.append(c)
            x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        output = x.transpose(0, 1) if self.batch_first else x
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if not batched:
            output = output.squeeze(batch_dim)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)
