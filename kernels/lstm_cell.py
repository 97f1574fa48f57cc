"""Fusion level "cell": per time step, torch's GEMM for ``h @ W_hhᵀ``, then ONE Triton kernel for
the gate activations and the c/h update (forward), or for the pointwise backward (backward).

Shapes (T steps, B batch, H hidden; dt = the input dtype, fp32/bf16/fp16):
    xp    (T, B, 4H) fp32   input projection x @ W_ihᵀ + b_ih + b_hh, gates [i, f, g, o]
    y     (T, B, H)  dt     outputs h_1..h_T (also the next step's GEMM input)
    c_all (T+1,B, H) fp32   c_0..c_T
    acts  (T, B, 4H) fp32   activated gates i, f, g, o (saved for backward)
    dG    (T, B, 4H) dt     pre-activation gradients (fed to the weight GEMMs after the loop)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import cell_math as cm
from .buffers import new_buffer
from .cell_math import GATES, GRU, LSTM, SAVED
from .device import on_tensor_device
from .launch_config import pointwise_config
from .lstm_math import lstm_pointwise_backward, lstm_pointwise_forward, store_gate_blocks

# ----------------------------------------------------------------------------- kernels
# One skeleton per direction for every cell type: ``CELL`` (cell_math.py: 0 LSTM, 1 GRU, 2 RNN_TANH,
# 3 RNN_RELU) is a compile-time constant, so each cell type compiles to its own branch alone (the
# LSTM's code is what it was before GRU and RNN joined). For GRU and RNN the "c" state buffers hold
# h_t in fp32 (the pointwise math reads h_{t-1} at full precision; y holds it in the input dtype).


@triton.jit
def cell_forward_kernel(
    xp_ptr, hw_ptr, c_prev_ptr,  # (B,G·H) fp32, (B,G·H) dt = h_{t-1} @ W_hhᵀ (+ b_hh: GRU, RNN), (B,H) fp32
    y_ptr, c_ptr, act_ptr,  # outputs: (B,H) dt, (B,H) fp32, (B,4H) fp32 saved activations (unused: RNN)
    B, H,
    BLOCK: tl.constexpr,
    CELL: tl.constexpr = 0,
):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = n < B * H
    b = n // H
    if CELL == 0:
        gate = b * 4 * H + n % H  # column of gate i for (b, unit); f, g, o follow at +H, +2H, +3H
        gi = tl.load(xp_ptr + gate, mask=mask) + tl.load(hw_ptr + gate, mask=mask).to(tl.float32)
        gf = tl.load(xp_ptr + gate + H, mask=mask) + tl.load(hw_ptr + gate + H, mask=mask).to(tl.float32)
        gg = tl.load(xp_ptr + gate + 2 * H, mask=mask) + tl.load(hw_ptr + gate + 2 * H, mask=mask).to(tl.float32)
        go = tl.load(xp_ptr + gate + 3 * H, mask=mask) + tl.load(hw_ptr + gate + 3 * H, mask=mask).to(tl.float32)
        c_prev = tl.load(c_prev_ptr + n, mask=mask)
        i, f, g, o, c, h = lstm_pointwise_forward(gi, gf, gg, go, c_prev)
        tl.store(c_ptr + n, c, mask=mask)
        tl.store(y_ptr + n, h.to(y_ptr.dtype.element_ty), mask=mask)
        store_gate_blocks(act_ptr, gate, H, i, f, g, o, mask)
    elif CELL == 1:
        gate = b * 3 * H + n % H  # gates r, z, n at +0, +H, +2H on both sides
        hn = tl.load(hw_ptr + gate + 2 * H, mask=mask).to(tl.float32)
        r, z, new, h = cm.gru_pointwise_forward(
            tl.load(xp_ptr + gate, mask=mask), tl.load(xp_ptr + gate + H, mask=mask),
            tl.load(xp_ptr + gate + 2 * H, mask=mask), tl.load(hw_ptr + gate, mask=mask).to(tl.float32),
            tl.load(hw_ptr + gate + H, mask=mask).to(tl.float32), hn, tl.load(c_prev_ptr + n, mask=mask))
        store_gate_blocks(act_ptr, b * 4 * H + n % H, H, r, z, new, hn, mask)
        tl.store(c_ptr + n, h, mask=mask)
        tl.store(y_ptr + n, h.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        pre = tl.load(xp_ptr + n, mask=mask) + tl.load(hw_ptr + n, mask=mask).to(tl.float32)
        h = cm.rnn_pointwise_forward(pre, CELL == 3)
        tl.store(c_ptr + n, h, mask=mask)
        tl.store(y_ptr + n, h.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def cell_backward_kernel(
    dy_ptr, dh_rec_ptr, dc_ptr,  # (B,H) fp32 dL/dh_t from above, (B,H) dt from step t+1, (B,H) fp32 in/out
    act_ptr, c_ptr, c_prev_ptr,  # saved: (B,4H) fp32 (unused: RNN), c_t, c_{t-1} (GRU, RNN: h_t, h_{t-1})
    dg_ptr,  # output (B,4H) dt; GRU (B,6H): input side r, z, n then recurrent side r, z, n; RNN (B,H)
    B, H,
    BLOCK: tl.constexpr,
    CELL: tl.constexpr = 0,
):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = n < B * H
    dh = tl.load(dy_ptr + n, mask=mask) + tl.load(dh_rec_ptr + n, mask=mask).to(tl.float32)
    out_ty = dg_ptr.dtype.element_ty
    if CELL == 0:
        gate = (n // H) * 4 * H + n % H
        dc = tl.load(dc_ptr + n, mask=mask)
        i = tl.load(act_ptr + gate, mask=mask)
        f = tl.load(act_ptr + gate + H, mask=mask)
        g = tl.load(act_ptr + gate + 2 * H, mask=mask)
        o = tl.load(act_ptr + gate + 3 * H, mask=mask)
        c = tl.load(c_ptr + n, mask=mask)
        c_prev = tl.load(c_prev_ptr + n, mask=mask)
        dgi, dgf, dgg, dgo, dc_prev = lstm_pointwise_backward(dh, dc, i, f, g, o, c, c_prev)
        tl.store(dg_ptr + gate, dgi.to(out_ty), mask=mask)
        tl.store(dg_ptr + gate + H, dgf.to(out_ty), mask=mask)
        tl.store(dg_ptr + gate + 2 * H, dgg.to(out_ty), mask=mask)
        tl.store(dg_ptr + gate + 3 * H, dgo.to(out_ty), mask=mask)
        tl.store(dc_ptr + n, dc_prev, mask=mask)
    elif CELL == 1:
        dh += tl.load(dc_ptr + n, mask=mask)  # the direct part z_{t+1} ⊙ dh_{t+1}, carried in dc
        dr, dz, dn, dn_rec, direct = cm.gru_backward_from_saved(dh, act_ptr, (n // H) * 4 * H + n % H, H,
                                                                tl.load(c_prev_ptr + n, mask=mask), mask)
        cm.gru_store_grads(dg_ptr, (n // H) * 6 * H + n % H, H, dr, dz, dn, dn_rec, mask)
        tl.store(dc_ptr + n, direct, mask=mask)
    else:
        dpre = cm.rnn_pointwise_backward(dh, tl.load(c_ptr + n, mask=mask), CELL == 3)
        tl.store(dg_ptr + n, dpre.to(out_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers


@on_tensor_device
def _forward_loop(xp: torch.Tensor, h0: torch.Tensor, s0: torch.Tensor, w_hh: torch.Tensor,
                  b_hh: torch.Tensor | None, cell: int):
    """The time loop of every cell type: ``xp (T,B,G·H) fp32``, ``h0 (B,H)``, ``s0 (B,H)`` the first
    fp32 state (LSTM: c0; GRU, RNN: h0), ``w_hh (G·H,H) dt``, ``b_hh (G·H,) dt`` added to the recurrent
    product (GRU, RNN) or None. Returns ``y (T,B,H) dt``, ``s_all (T+1,B,H) fp32``, ``acts (T,B,S·H) fp32``."""
    T, B, GH = xp.shape
    H, dt, dev = GH // GATES[cell], w_hh.dtype, xp.device
    y = new_buffer((T, B, H), dt, dev)
    s_all = new_buffer((T + 1, B, H), torch.float32, dev)
    acts = new_buffer((T, B, SAVED[cell] * H), torch.float32, dev)
    hw = new_buffer((B, GH), dt, dev)
    s_all[0] = s0
    cfg = pointwise_config(B * H)
    grid = (triton.cdiv(B * H, cfg.block),)
    meta = {} if cell == LSTM else {"CELL": cell}  # the LSTM launches exactly as before GRU/RNN joined
    w_t = w_hh.t()
    h_prev = h0.to(dt)
    for t in range(T):
        if b_hh is None:
            torch.mm(h_prev, w_t, out=hw)
        else:
            torch.addmm(b_hh, h_prev, w_t, out=hw)
        cell_forward_kernel[grid](xp[t], hw, s_all[t], y[t], s_all[t + 1], acts[t] if SAVED[cell] else hw, B, H,
                                  BLOCK=cfg.block, num_warps=cfg.num_warps, **meta)
        h_prev = y[t]
    return y, s_all, acts


@on_tensor_device
def _backward_loop(dy: torch.Tensor, ds_n: torch.Tensor, w_hh: torch.Tensor, s_all: torch.Tensor,
                   acts: torch.Tensor, cell: int):
    """Reverse loop of :func:`_forward_loop`; ``ds_n (B,H) fp32`` seeds the carried fp32 state grad
    (LSTM: dc; GRU: the direct z ⊙ dh part of dh_prev; RNN: unused). Returns ``dG (T,B,W) dt`` (W = G·H,
    GRU 6H: input then recurrent side), ``dh_rec (B,H) dt`` = recurrent side of step 0 @ W_hh, ``ds``."""
    T, B, H = dy.shape
    dt, dev, GH = w_hh.dtype, dy.device, GATES[cell] * H
    width = 2 * GH if cell == GRU else GH
    dG = new_buffer((T, B, width), dt, dev)
    ds = ds_n.float().contiguous().clone()  # carried in place: must be our own contiguous buffer
    dh_rec = torch.zeros((B, H), dtype=dt, device=dev)
    cfg = pointwise_config(B * H)
    grid = (triton.cdiv(B * H, cfg.block),)
    meta = {} if cell == LSTM else {"CELL": cell}
    for t in range(T - 1, -1, -1):
        cell_backward_kernel[grid](dy[t], dh_rec, ds, acts[t] if SAVED[cell] else dy[t], s_all[t + 1], s_all[t],
                                   dG[t], B, H, BLOCK=cfg.block, num_warps=cfg.num_warps, **meta)
        torch.mm(dG[t] if width == GH else dG[t, :, GH:], w_hh, out=dh_rec)
    return dG, dh_rec, ds


def cell_forward(xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor):
    """Run the sequence: ``xp (T,B,4H) fp32``, ``h0, c0 (B,H)``, ``w_hh (4H,H) dt``.

    Returns ``y (T,B,H) dt``, ``c_all (T+1,B,H) fp32``, ``acts (T,B,4H) fp32``.
    """
    return _forward_loop(xp, h0, c0, w_hh, None, LSTM)


def cell_backward(dy: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor, c_all: torch.Tensor,
                  acts: torch.Tensor):
    """Reverse loop. ``dy (T,B,H) fp32`` already holds dL/dh_n in its last step; ``dc_n (B,H) fp32``.

    Returns ``dG (T,B,4H) dt``, ``dh0 (B,H) dt``, ``dc0 (B,H) fp32``.
    """
    return _backward_loop(dy, dc_n, w_hh, c_all, acts, LSTM)


def rnn_cell_forward(xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                     cell: int):
    """GRU / RNN sequence (``cell`` from cell_math.py): ``xp (T,B,G·H) fp32`` = x W_ihᵀ + b_ih,
    ``h0 (B,H)``, ``w_hh (G·H,H) dt``, ``b_hh (G·H,) dt`` or None (G = 3 GRU, 1 RNN).

    Returns ``y (T,B,H) dt``, ``h_all (T+1,B,H) fp32`` (h_0..h_T), ``acts (T,B,4H) fp32`` (GRU: r, z,
    n, hn; RNN: (T,B,0))."""
    return _forward_loop(xp, h0, h0.float(), w_hh, b_hh, cell)


def rnn_cell_backward(dy: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, acts: torch.Tensor, cell: int):
    """Reverse loop of :func:`rnn_cell_forward`; ``dy (T,B,H) fp32`` holds dL/dh_n in its last step.

    Returns ``dG (T,B,W) dt`` (GRU W = 6H: input-side pre-activation grads then recurrent-side ones;
    RNN W = H, both sides), ``dh0 (B,H) fp32``."""
    T, B, H = dy.shape
    dG, dh_rec, direct = _backward_loop(dy, dy.new_zeros((B, H)), w_hh, h_all, acts, cell)
    return dG, dh_rec.float() + direct
# ----------------------------------------------------------------------------- with a projection
# nn.LSTM with proj_size = P: h_t = W_hr (o ⊙ tanh c_t), W_hr (P×H), W_hh (4H×P). The same kernels
# compute the cell; torch's GEMMs add the projection per step (forward) and its transpose (backward).


@on_tensor_device
def cell_forward_projected(xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
                           w_hr: torch.Tensor):
    """``xp (T,B,4H) fp32``, ``h0 (B,P)``, ``c0 (B,H)``, ``w_hh (4H,P) dt``, ``w_hr (P,H) dt``.

    Returns ``y (T,B,P) dt`` (projected outputs), ``c_all (T+1,B,H) fp32``, ``acts (T,B,4H) fp32``.
    """
    T, B, H4 = xp.shape
    H, P, dt, dev = H4 // 4, w_hr.shape[0], w_hh.dtype, xp.device
    y = new_buffer((T, B, P), dt, dev)
    c_all = new_buffer((T + 1, B, H), torch.float32, dev)
    acts = new_buffer((T, B, H4), torch.float32, dev)
    hw = new_buffer((B, H4), dt, dev)
    raw = new_buffer((B, H), dt, dev)  # o ⊙ tanh(c_t), before the projection
    c_all[0] = c0
    cfg = pointwise_config(B * H)
    grid = (triton.cdiv(B * H, cfg.block),)
    w_t, r_t = w_hh.t(), w_hr.t()
    h_prev = h0.to(dt)
    for t in range(T):
        torch.mm(h_prev, w_t, out=hw)
        cell_forward_kernel[grid](xp[t], hw, c_all[t], raw, c_all[t + 1], acts[t], B, H,
                                  BLOCK=cfg.block, num_warps=cfg.num_warps)
        torch.mm(raw, r_t, out=y[t])
        h_prev = y[t]
    return y, c_all, acts


@on_tensor_device
def cell_backward_projected(dy: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor, w_hr: torch.Tensor,
                            c_all: torch.Tensor, acts: torch.Tensor):
    """Reverse loop of :func:`cell_forward_projected`. ``dy (T,B,P) fp32`` already holds dL/dh_n in
    its last step; ``dc_n (B,H) fp32``.

    Returns ``dG (T,B,4H) dt``, ``dh0 (B,P) dt``, ``dc0 (B,H) fp32``, ``dw_hr (P,H) dt`` where
    ``dw_hr = Σ_t dh_tᵀ (o_t ⊙ tanh c_t)`` with dh_t the total gradient of the projected h_t.
    """
    T, B, P = dy.shape
    H, dt, dev = w_hr.shape[1], w_hh.dtype, dy.device
    dG = new_buffer((T, B, 4 * H), dt, dev)
    dH = new_buffer((T, B, P), torch.float32, dev)  # total dL/dh_t (projected), for dw_hr
    dc = dc_n.float().contiguous().clone()
    dh_rec = torch.zeros((B, P), dtype=dt, device=dev)
    dh_raw = new_buffer((B, H), dt, dev)
    no_dy = torch.zeros((B, H), dtype=torch.float32, device=dev)  # the kernel's dy: all of dh is in dh_raw
    cfg = pointwise_config(B * H)
    grid = (triton.cdiv(B * H, cfg.block),)
    for t in range(T - 1, -1, -1):
        torch.add(dy[t], dh_rec, out=dH[t])
        torch.mm(dH[t].to(dt), w_hr, out=dh_raw)
        cell_backward_kernel[grid](no_dy, dh_raw, dc, acts[t], c_all[t + 1], c_all[t], dG[t], B, H,
                                   BLOCK=cfg.block, num_warps=cfg.num_warps)
        torch.mm(dG[t], w_hh, out=dh_rec)
    raw = acts[..., 3 * H:] * torch.tanh(c_all[1:])  # o_t ⊙ tanh(c_t), fp32
    dw_hr = torch.mm(dH.reshape(T * B, P).t(), raw.reshape(T * B, H)).to(dt)
    return dG, dh_rec, dc, dw_hr
