"""Autograd for ``lstm_triton::recurrence`` (ops.py), and the torch ops around it for one layer.

The operator only runs the recurrence. The large GEMMs that need no time loop stay with torch
(cuBLAS), as ordinary differentiable torch ops (DESIGN.md, "The math"):
    xp = x @ W_ihᵀ + b_ih + b_hh                                 (T·B × 4H, fp32)
so autograd derives dX = dG W_ih, dW_ih = dGᵀ X, db = Σ dG from dxp = dG; the operator's
backward gives dG, dh0, dc0 and dW_hh = dGᵀ H_prev.

A backward that must itself be differentiable (``create_graph=True``: gradient penalties,
``torch.func.grad``/``jacrev``, double backward) cannot go through the kernels, which write
plain buffers. There :func:`differentiable_backward` recomputes the layer from its saved inputs
with plain torch ops and applies the same backward formulas, so every second-order term is in
the graph (same math, fp32 state; slower).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backend import _debug
from .packed import active_steps, last_hidden, mask_padded_steps, zero_padding


def input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """``x (T,B,I) dt`` -> ``xp (T,B,4H) fp32`` with both biases added (differentiable)."""
    T, B, I = x.shape
    H4 = w_ih.shape[0]
    x2 = x.reshape(T * B, I)
    biases = [b.float() for b in (b_ih, b_hh) if b is not None]
    bias = biases[0] + biases[1] if len(biases) == 2 else (biases[0] if biases else None)
    if bias is not None and x.dtype == torch.float32:
        xp = torch.addmm(bias, x2, w_ih.t())  # one GEMM with the bias in its epilogue
    else:
        xp = torch.mm(x2, w_ih.t()).float()
        xp = xp if bias is None else xp + bias
    return xp.view(T, B, H4)  # explicit sizes: a view with -1 is ambiguous when T·B = 0


def run_layer(fusion: str, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths: Tensor | None = None,
              w_hr: Tensor | None = None):
    """One direction of one layer on the kernels, time-major; ``(y (T,B,P), h_n (B,P), c_n (B,H))``
    (P = H, or nn.LSTM's proj_size with ``w_hr (P,H)``).

    ``lengths (B,)`` int64 on x's device (optional): row b runs its first ``lengths[b]`` steps; past
    them its output is 0 and its state is frozen (``packed.py``: done by the gate values alone)."""
    if lengths is not None:
        active = active_steps(lengths, x.shape[0])
        xp = mask_padded_steps(input_projection(zero_padding(x, active), w_ih, b_ih, b_hh), active)
    else:
        xp = input_projection(x, w_ih, b_ih, b_hh)
    # torch.jit.trace records an autograd.Function as an unsaveable Python op: give it the operator
    # (whose registered autograd is the same formula).
    apply = torch.ops.lstm_triton.recurrence if torch.jit.is_tracing() else Recurrence.apply
    y, c_n, _, _ = apply(xp, h0, c0, w_hh, w_hr, fusion)
    if lengths is not None:
        return y, last_hidden(y, lengths, h0), c_n
    return y, y[-1].clone(), c_n  # h_n owns its storage, as nn.LSTM's does


def recurrence_setup_context(ctx, inputs, output) -> None:
    xp, h0, c0, w_hh, w_hr, fusion = inputs
    y, _, c_all, acts = output
    ctx.mark_non_differentiable(c_all, acts)  # saved intermediates, not results
    ctx.save_for_backward(xp, h0, c0, w_hh, w_hr, y, c_all, acts)
    ctx.fusion = fusion


def _needs_graph(*tensors) -> bool:
    """True when this backward is being recorded (create_graph=True or a torch.func transform)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def recurrence_backward_formula(ctx, dy, dc_n, _dc_all, _dacts):
    xp, h0, c0, w_hh, w_hr, y, c_all, acts = ctx.saved_tensors
    T, B, H4 = xp.shape
    H, P, dt = H4 // 4, w_hh.shape[1], w_hh.dtype
    if dy is None:
        dy = xp.new_zeros((T, B, P))
    if dc_n is None:
        dc_n = xp.new_zeros((B, H))
    if _needs_graph(dy, dc_n, xp, h0, c0, w_hh, w_hr):
        _debug("backward with create_graph: the layer's backward runs in torch ops (differentiable), not the kernels")
        dxp, dh0, dc0, dw_hh, dw_hr = differentiable_backward(xp, h0, c0, w_hh, dy, dc_n, w_hr)
        return (dxp, dh0.to(h0.dtype), dc0.to(c0.dtype), dw_hh.to(dt),
                None if w_hr is None else dw_hr.to(dt), None)
    dG, dh0, dc0, dw_hr = torch.ops.lstm_triton.recurrence_backward(dy.float(), dc_n.float(), w_hh, w_hr, c_all,
                                                                    acts, ctx.fusion)
    dw_hh = None
    if ctx.needs_input_grad[3]:
        h_prev = torch.cat([h0.to(dt).unsqueeze(0), y[:-1]]).reshape(T * B, P)
        dw_hh = torch.mm(dG.reshape(T * B, H4).t(), h_prev)
    return dG.float(), dh0.to(h0.dtype), dc0.to(c0.dtype), dw_hh, None if w_hr is None else dw_hr, None


def differentiable_backward(xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, dy: Tensor, dc_n: Tensor,
                            w_hr: Tensor | None = None):
    """The recurrence's backward in plain torch ops (fp32), differentiable in every argument.

    ``xp (T,B,4H)``, ``h0 (B,P)``, ``c0 (B,H)``, ``w_hh (4H,P)``, ``dy (T,B,P)`` (with dL/dh_n in its
    last step), ``dc_n (B,H)``, ``w_hr (P,H)`` or None (P = H). Returns ``(dxp (T,B,4H), dh0 (B,P),
    dc0 (B,H), dw_hh (4H,P), dw_hr (P,H) or None)`` in fp32 (float64 when ``xp`` is float64: gradcheck).
    """
    T = xp.shape[0]
    ct = torch.promote_types(xp.dtype, torch.float32)
    w = w_hh.to(ct)
    r = None if w_hr is None else w_hr.to(ct)
    h, c = h0.to(ct), c0.to(ct)
    h_prev, c_prev, gates, raws = [], [], [], []
    for t in range(T):  # recompute the forward: the saved activations are not in the graph
        i, f, g, o = (xp[t] + h @ w.t()).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        h_prev.append(h)
        c_prev.append(c)
        gates.append((i, f, g, o))
        c = f * c + i * g
        h = o * torch.tanh(c)
        raws.append(h)
        if r is not None:
            h = h @ r.t()
    dh_rec = torch.zeros_like(h)
    dc = dc_n.to(ct)
    dG, dH = [None] * T, [None] * T
    c_next = c
    for t in range(T - 1, -1, -1):
        i, f, g, o = gates[t]
        tanh_c = torch.tanh(c_next)
        dH[t] = dy[t].to(ct) + dh_rec
        dh = dH[t] if r is None else dH[t] @ r
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        dG[t] = torch.cat([dc * g * i * (1 - i), dc * c_prev[t] * f * (1 - f), dc * i * (1 - g * g),
                           dh * tanh_c * o * (1 - o)], dim=1)
        dc = dc * f
        dh_rec = dG[t] @ w
        c_next = c_prev[t]
    dxp = torch.stack(dG)
    dw_hh = torch.einsum("tbg,tbh->gh", dxp, torch.stack(h_prev))
    dw_hr = None if r is None else torch.einsum("tbp,tbh->ph", torch.stack(dH), torch.stack(raws))
    return dxp, dh_rec, dc, dw_hh, dw_hr


class Recurrence(torch.autograd.Function):
    """``torch.ops.lstm_triton.recurrence`` with the same autograd formula, as an autograd.Function
    with ``setup_context``: torch.func transforms (grad, vjp, jacrev) accept this form, not an
    operator's registered autograd. The layer calls this; the operator's own registration serves
    graphs that hold the bare operator (torch.export)."""

    @staticmethod
    def forward(xp, h0, c0, w_hh, w_hr, fusion):
        return torch.ops.lstm_triton.recurrence(xp, h0, c0, w_hh, w_hr, fusion)

    setup_context = staticmethod(recurrence_setup_context)
    backward = staticmethod(recurrence_backward_formula)
