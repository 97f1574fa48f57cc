"""One torch.autograd.Function per fusion level over a single LSTM layer, time-major.

The Functions only call launchers and save tensors. The large GEMMs that need no time loop
stay with torch (cuBLAS): the input projection before the loop, and the weight and input
gradients after it (DESIGN.md, "The math"):
    xp = x @ W_ihᵀ + b_ih + b_hh                           (T·B × 4H, fp32)
    dW_hh = dGᵀ H_prev,  dW_ih = dGᵀ X,  db = Σ dG,  dX = dG W_ih
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from .kernels.lstm_cell import cell_backward, cell_forward
from .kernels.lstm_persistent import persistent_backward, persistent_forward
from .kernels.lstm_step import step_backward, step_forward


def _input_projection(x, w_ih, b_ih, b_hh):
    """``x (T,B,I) dt`` -> ``xp (T,B,4H) fp32`` with both biases added."""
    T, B, I = x.shape
    xp = torch.mm(x.reshape(T * B, I), w_ih.t()).float()
    for b in (b_ih, b_hh):
        if b is not None:
            xp += b.float()
    return xp.view(T, B, -1)


def _forward(ctx, launch, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    xp = _input_projection(x, w_ih, b_ih, b_hh)
    y, c_all, acts = launch(xp, h0, c0, w_hh)
    ctx.save_for_backward(x, h0, w_ih, w_hh, y, c_all, acts)
    ctx.has_bias = (b_ih is not None, b_hh is not None)
    return y, y[-1].clone(), c_all[-1].to(x.dtype)


def _backward(ctx, launch, dy, dh_n, dc_n):
    x, h0, w_ih, w_hh, y, c_all, acts = ctx.saved_tensors
    T, B, I = x.shape
    H, dt = w_hh.shape[1], w_hh.dtype
    dy32 = torch.empty(dy.shape, dtype=torch.float32, device=dy.device)  # contiguous, whatever dy's strides
    dy32.copy_(dy)
    dy32[-1] += dh_n.float()  # dL/dh_T arrives both as output and as h_n
    dG, dh0, dc0 = launch(dy32, dc_n.float(), w_hh, c_all, acts)
    dG2 = dG.reshape(T * B, 4 * H)
    h_prev = torch.cat([h0.to(dt).unsqueeze(0), y[:-1]]).reshape(T * B, H)
    needs = ctx.needs_input_grad  # (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    dx = torch.mm(dG2, w_ih).view(T, B, I) if needs[0] else None
    dw_ih = torch.mm(dG2.t(), x.reshape(T * B, I)) if needs[3] else None
    dw_hh = torch.mm(dG2.t(), h_prev) if needs[4] else None
    db = dG2.float().sum(0).to(dt) if any(ctx.has_bias) else None
    db_ih = db if ctx.has_bias[0] else None
    db_hh = db if ctx.has_bias[1] else None
    return dx, dh0.to(h0.dtype), dc0.to(h0.dtype), dw_ih, dw_hh, db_ih, db_hh


class LSTMCellFunction(Function):
    """Level "cell": torch GEMM + one fused Triton gate/cell kernel per step."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return _forward(ctx, cell_forward, x, h0, c0, w_ih, w_hh, b_ih, b_hh)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        return _backward(ctx, cell_backward, dy, dh_n, dc_n)


class LSTMStepFunction(Function):
    """Level "step": one Triton kernel per step, recurrent GEMM fused with the gates."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return _forward(ctx, step_forward, x, h0, c0, w_ih, w_hh, b_ih, b_hh)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        return _backward(ctx, step_backward, dy, dh_n, dc_n)


class LSTMPersistentFunction(Function):
    """Level "persistent": one Triton launch for the whole sequence, W_hh slices kept on chip."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return _forward(ctx, persistent_forward, x, h0, c0, w_ih, w_hh, b_ih, b_hh)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        return _backward(ctx, persistent_backward, dy, dh_n, dc_n)


FUNCTIONS: dict[str, type[Function]] = {
    "cell": LSTMCellFunction, "step": LSTMStepFunction, "persistent": LSTMPersistentFunction,
}
