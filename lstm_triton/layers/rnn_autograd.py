"""Autograd for ``lstm_triton::rnn_recurrence`` (GRU and plain RNN; ``rnn_ops.py``), the way
``autograd.py`` does it for the LSTM: the operator's backward gives the pre-activation gradients
dG and dh0; torch's GEMMs give dW_hh = dG_recᵀ H_prev and db_hh = Σ dG_rec; autograd carries
dxp = dG_in through the input projection x W_ihᵀ + b_ih (an ordinary torch op).

A backward that must itself be differentiable (``create_graph=True``, torch.func) runs
:func:`differentiable_rnn_backward`: the same formulas in plain torch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.cell_math import CELL_IDS, GATES, GRU, RNN_RELU
from .autograd import _needs_graph
from .backend import _debug


def rnn_setup_context(ctx, inputs, output) -> None:
    xp, h0, w_hh, b_hh, mode, fusion = inputs
    y, h_all, acts = output
    ctx.mark_non_differentiable(h_all, acts)  # saved intermediates, not results
    ctx.save_for_backward(xp, h0, w_hh, b_hh, y, h_all, acts)
    ctx.mode, ctx.fusion = mode, fusion


def rnn_backward_formula(ctx, dy, _dh_all, _dacts):
    xp, h0, w_hh, b_hh, y, h_all, acts = ctx.saved_tensors
    T, B, GH = xp.shape
    dt = w_hh.dtype
    if dy is None:
        dy = xp.new_zeros((T, B, GH // GATES[CELL_IDS[ctx.mode]]))
    if _needs_graph(dy, xp, h0, w_hh, b_hh):
        _debug("backward with create_graph: the layer's backward runs in torch ops (differentiable), not the kernels")
        dxp, dh0, dw_hh, db_hh = differentiable_rnn_backward(xp, h0, w_hh, b_hh, dy, ctx.mode)
        return dxp, dh0.to(h0.dtype), dw_hh.to(dt), None if b_hh is None else db_hh.to(dt), None, None
    dG, dh0 = torch.ops.lstm_triton.rnn_recurrence_backward(dy.float(), w_hh, h_all, acts, ctx.mode, ctx.fusion)
    rec = dG[..., dG.shape[-1] - GH:].reshape(T * B, GH)  # recurrent-side grads (RNN: the same as the input side)
    dw_hh = db_hh = None
    if ctx.needs_input_grad[2]:
        h_prev = torch.cat([h0.to(dt).unsqueeze(0), y[:-1]]).reshape(T * B, w_hh.shape[1])  # sizes: T·B may be 0
        dw_hh = torch.mm(rec.t(), h_prev)
    if b_hh is not None and ctx.needs_input_grad[3]:
        db_hh = rec.float().sum(0).to(dt)
    return dG[..., :GH].float(), dh0.to(h0.dtype), dw_hh, db_hh, None, None


def differentiable_rnn_backward(xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, dy: Tensor, mode: str):
    """The GRU / RNN recurrence's backward in plain torch ops (fp32; float64 for float64 input),
    differentiable in every argument. ``xp (T,B,G·H)``, ``h0 (B,H)``, ``w_hh (G·H,H)``, ``b_hh (G·H,)``
    or None, ``dy (T,B,H)`` with dL/dh_n in its last step. Returns ``(dxp, dh0, dw_hh, db_hh)``."""
    cell = CELL_IDS[mode]
    ct = torch.promote_types(xp.dtype, torch.float32)
    w = w_hh.to(ct)
    h = h0.to(ct)
    h_prev, saved = [], []
    for t in range(xp.shape[0]):  # recompute the forward: the saved activations are not in the graph
        hw = h @ w.t() if b_hh is None else h @ w.t() + b_hh.to(ct)
        h_prev.append(h)
        if cell == GRU:
            xr, xz, xn = xp[t].chunk(3, dim=1)
            hr, hz, hn = hw.chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            saved.append((r, z, n, hn))
        else:
            pre = xp[t] + hw
            h = torch.relu(pre) if cell == RNN_RELU else torch.tanh(pre)
            saved.append(h)
    dh_rec = torch.zeros_like(h)
    d_in, d_rec = [None] * len(saved), [None] * len(saved)
    for t in range(len(saved) - 1, -1, -1):
        dh = dy[t].to(ct) + dh_rec
        if cell == GRU:
            r, z, n, hn = saved[t]
            dn = dh * (1 - z) * (1 - n * n)
            dz = dh * (h_prev[t] - n) * z * (1 - z)
            dr = dn * hn * r * (1 - r)
            d_in[t] = torch.cat([dr, dz, dn], dim=1)
            d_rec[t] = torch.cat([dr, dz, dn * r], dim=1)
            dh_rec = d_rec[t] @ w + z * dh
        else:
            h = saved[t]
            d_in[t] = d_rec[t] = dh * (h > 0) if cell == RNN_RELU else dh * (1 - h * h)
            dh_rec = d_rec[t] @ w
    rec = torch.stack(d_rec)
    dw_hh = torch.einsum("tbg,tbh->gh", rec, torch.stack(h_prev))
    return torch.stack(d_in), dh_rec, dw_hh, rec.sum((0, 1))


class RnnRecurrence(torch.autograd.Function):
    """``torch.ops.lstm_triton.rnn_recurrence`` as an autograd.Function (torch.func accepts this form;
    see ``autograd.Recurrence``)."""

    @staticmethod
    def forward(xp, h0, w_hh, b_hh, mode, fusion):
        return torch.ops.lstm_triton.rnn_recurrence(xp, h0, w_hh, b_hh, mode, fusion)

    setup_context = staticmethod(rnn_setup_context)
    backward = staticmethod(rnn_backward_formula)
