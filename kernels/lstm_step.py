"""Fusion level "step": ONE Triton kernel per time step does the recurrent GEMM for a
(batch tile × hidden slice) of all four gates and, in its epilogue, the gates and the c/h update.

Forward program (pb, ph) owns batch rows ``pb*BLOCK_B…`` and hidden units ``ph*BLOCK_H…``:
    acc_q = h_{t-1}[rows, :] @ W_hh[q*H + units, :]ᵀ   for q in (i, f, g, o), fp32 accumulation
    G_q = xp[t][rows, q*H + units] + acc_q  ->  pointwise  ->  y[t], c_t, acts[t]
Backward program (pb, ph) owns the same tile of dh / dc:
    dh = dy[t] + dG_{t+1}[rows, :] @ W_hh[:, units]   (reduction over all 4H gate rows)
    pointwise backward -> dG_t[rows, q*H + units], dc_{t-1}
Only whole-step data crosses programs (h_{t-1} / dG_{t+1}), and a step boundary is a kernel
boundary, so no synchronisation is needed inside a launch.

Shapes as in lstm_cell: xp (T,B,4H) fp32, y (T,B,H) dt, c_all (T+1,B,H) fp32, acts (T,B,4H) fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .buffers import new_buffer
from .launch_config import dot_precision, step_config
from .lstm_math import lstm_pointwise_backward, lstm_pointwise_forward

# ----------------------------------------------------------------------------- kernels


@triton.jit
def step_forward_kernel(
    xp_ptr, h_prev_ptr, w_ptr, c_prev_ptr,  # (B,4H) fp32, (B,K) dt, (4H,K) dt, (B,H) fp32
    y_ptr, c_ptr, act_ptr,  # outputs: (B,H) dt, (B,H) fp32, (B,4H) fp32
    B, H, K,  # K: width of the recurrent input, H (or nn.LSTM's proj_size P; y is then o ⊙ tanh c)
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < B
    unit_ok = units < H
    w_ty = w_ptr.dtype.element_ty
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    # W_hhᵀ tile [k, unit] of gate q lives at W_hh[(q*H + unit), k].
    w_tile = w_ptr + units[None, :] * K + ks[:, None]
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + ks) < K
        h = tl.load(h_prev_ptr + rows[:, None] * K + (k0 + ks)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(w_ty)
        w_mask = k_ok[:, None] & unit_ok[None, :]
        acc_i = tl.dot(h, tl.load(w_tile + k0, mask=w_mask, other=0.0), acc_i, input_precision=PRECISION)
        acc_f = tl.dot(h, tl.load(w_tile + H * K + k0, mask=w_mask, other=0.0), acc_f, input_precision=PRECISION)
        acc_g = tl.dot(h, tl.load(w_tile + 2 * H * K + k0, mask=w_mask, other=0.0), acc_g,
                       input_precision=PRECISION)
        acc_o = tl.dot(h, tl.load(w_tile + 3 * H * K + k0, mask=w_mask, other=0.0), acc_o,
                       input_precision=PRECISION)

    mask = row_ok[:, None] & unit_ok[None, :]
    gate = rows[:, None] * 4 * H + units[None, :]
    state = rows[:, None] * H + units[None, :]
    gi = acc_i + tl.load(xp_ptr + gate, mask=mask, other=0.0)
    gf = acc_f + tl.load(xp_ptr + gate + H, mask=mask, other=0.0)
    gg = acc_g + tl.load(xp_ptr + gate + 2 * H, mask=mask, other=0.0)
    go = acc_o + tl.load(xp_ptr + gate + 3 * H, mask=mask, other=0.0)
    c_prev = tl.load(c_prev_ptr + state, mask=mask, other=0.0)
    i, f, g, o, c, h_new = lstm_pointwise_forward(gi, gf, gg, go, c_prev)
    tl.store(c_ptr + state, c, mask=mask)
    tl.store(y_ptr + state, h_new.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(act_ptr + gate, i, mask=mask)
    tl.store(act_ptr + gate + H, f, mask=mask)
    tl.store(act_ptr + gate + 2 * H, g, mask=mask)
    tl.store(act_ptr + gate + 3 * H, o, mask=mask)


@triton.jit
def step_backward_kernel(
    dg_next_ptr, w_ptr, dy_ptr, dc_ptr,  # (B,4H) dt = dG_{t+1}, (4H,H) dt, (B,H) fp32, (B,H) fp32 in/out
    act_ptr, c_ptr, c_prev_ptr,  # saved: (B,4H) fp32, c_t, c_{t-1} (B,H) fp32
    dg_ptr,  # output (B,4H) dt
    B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < B
    unit_ok = units < H
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, 4 * H, BLOCK_K):
        k_ok = (k0 + ks) < 4 * H
        dg = tl.load(dg_next_ptr + rows[:, None] * 4 * H + (k0 + ks)[None, :],
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + (k0 + ks)[:, None] * H + units[None, :],
                    mask=k_ok[:, None] & unit_ok[None, :], other=0.0)
        acc = tl.dot(dg, w, acc, input_precision=PRECISION)

    mask = row_ok[:, None] & unit_ok[None, :]
    gate = rows[:, None] * 4 * H + units[None, :]
    state = rows[:, None] * H + units[None, :]
    dh = acc + tl.load(dy_ptr + state, mask=mask, other=0.0)
    dc = tl.load(dc_ptr + state, mask=mask, other=0.0)
    i = tl.load(act_ptr + gate, mask=mask, other=0.0)
    f = tl.load(act_ptr + gate + H, mask=mask, other=0.0)
    g = tl.load(act_ptr + gate + 2 * H, mask=mask, other=0.0)
    o = tl.load(act_ptr + gate + 3 * H, mask=mask, other=0.0)
    c = tl.load(c_ptr + state, mask=mask, other=0.0)
    c_prev = tl.load(c_prev_ptr + state, mask=mask, other=0.0)
    dgi, dgf, dgg, dgo, dc_prev = lstm_pointwise_backward(dh, dc, i, f, g, o, c, c_prev)
    out_ty = dg_ptr.dtype.element_ty
    tl.store(dg_ptr + gate, dgi.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + H, dgf.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + 2 * H, dgg.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + 3 * H, dgo.to(out_ty), mask=mask)
    tl.store(dc_ptr + state, dc_prev, mask=mask)


# ----------------------------------------------------------------------------- launchers


def _grid_and_meta(B: int, H: int, dtype: torch.dtype):
    cfg = step_config(B, H, dtype)
    grid = (triton.cdiv(B, cfg.block_b), triton.cdiv(H, cfg.block_h))
    meta = dict(BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k,
                PRECISION=dot_precision(dtype), num_warps=cfg.num_warps)
    return grid, meta


def step_forward(xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor):
    """Same contract as :func:`lstm_cell.cell_forward`; one launch per time step."""
    T, B, H4 = xp.shape
    H, dt, dev = H4 // 4, w_hh.dtype, xp.device
    y = new_buffer((T, B, H), dt, dev)
    c_all = new_buffer((T + 1, B, H), torch.float32, dev)
    acts = new_buffer((T, B, H4), torch.float32, dev)
    c_all[0] = c0
    grid, meta = _grid_and_meta(B, H, dt)
    w_hh = w_hh.contiguous()
    h_prev = h0.to(dt).contiguous()
    for t in range(T):
        step_forward_kernel[grid](xp[t], h_prev, w_hh, c_all[t], y[t], c_all[t + 1], acts[t], B, H, H, **meta)
        h_prev = y[t]
    return y, c_all, acts


def step_forward_projected(xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
                           w_hr: torch.Tensor):
    """nn.LSTM's projection (proj_size P): the fused step kernel reduces over P (``w_hh (4H,P)``,
    ``h0 (B,P)``) and writes o ⊙ tanh(c_t); torch's GEMM projects it, ``h_t = (o ⊙ tanh c_t) W_hrᵀ``.

    Same contract as :func:`lstm_cell.cell_forward_projected` (its backward serves both levels:
    with a projection the recurrent gradient must be whole before W_hr maps it back to H, which a
    kernel owning one slice of units cannot do without a grid-wide exchange)."""
    T, B, H4 = xp.shape
    H, P, dt, dev = H4 // 4, w_hr.shape[0], w_hh.dtype, xp.device
    y = new_buffer((T, B, P), dt, dev)
    c_all = new_buffer((T + 1, B, H), torch.float32, dev)
    acts = new_buffer((T, B, H4), torch.float32, dev)
    raw = new_buffer((B, H), dt, dev)
    c_all[0] = c0
    grid, meta = _grid_and_meta(B, H, dt)
    w_hh, r_t = w_hh.contiguous(), w_hr.t()
    h_prev = h0.to(dt).contiguous()
    for t in range(T):
        step_forward_kernel[grid](xp[t], h_prev, w_hh, c_all[t], raw, c_all[t + 1], acts[t], B, H, P, **meta)
        torch.mm(raw, r_t, out=y[t])
        h_prev = y[t]
    return y, c_all, acts


def step_backward(dy: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor, c_all: torch.Tensor,
                  acts: torch.Tensor):
    """Same contract as :func:`lstm_cell.cell_backward`; one launch per time step."""
    T, B, H = dy.shape
    dt, dev = w_hh.dtype, dy.device
    dG = new_buffer((T + 1, B, 4 * H), dt, dev)
    dG[T].zero_()  # dG_{T} = 0: nothing flows back from beyond the last step
    dc = dc_n.float().contiguous().clone()  # carried in place: must be our own contiguous buffer
    grid, meta = _grid_and_meta(B, H, dt)
    w_hh = w_hh.contiguous()
    for t in range(T - 1, -1, -1):
        step_backward_kernel[grid](dG[t + 1], w_hh, dy[t], dc, acts[t], c_all[t + 1], c_all[t], dG[t], B, H, **meta)
    dh0 = torch.mm(dG[0], w_hh)
    return dG[:T], dh0, dc
