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

from . import cell_math as cm
from .buffers import new_buffer
from .cell_math import GATES, GRU, LSTM, SAVED
from .device import on_tensor_device
from .launch_config import dot_precision, rescue_config, step_config
from .lstm_math import lstm_pointwise_backward, lstm_pointwise_forward, store_gate_blocks

# ----------------------------------------------------------------------------- kernels
# One skeleton per direction for every cell type: ``CELL`` (cell_math.py: 0 LSTM, 1 GRU, 2 RNN_TANH,
# 3 RNN_RELU) is a compile-time constant, so each type compiles to its own gates alone (the LSTM's
# code is what it was before GRU and RNN joined). GRU and RNN: ``b_ptr`` is b_hh (G·H,) fp32, added
# to the recurrent product (GRU's b_hn sits inside r ⊙ (·)); the "c" state buffers hold h in fp32.
# W_hh rows are gate-major for every type: gate q of unit u is row q·H + u.


@triton.jit
def step_forward_kernel(
    xp_ptr, h_prev_ptr, w_ptr, c_prev_ptr,  # (B,G·H) fp32, (B,K) dt, (G·H,K) dt, (B,H) fp32
    y_ptr, c_ptr, act_ptr,  # outputs: (B,H) dt, (B,H) fp32, (B,4H) fp32 (unused: RNN)
    B, H, K,  # K: width of the recurrent input, H (or nn.LSTM's proj_size P; y is then o ⊙ tanh c)
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    b_ptr=None,  # (G·H,) fp32 b_hh: GRU, RNN
    CELL: tl.constexpr = 0,
):
    step_forward_tile(xp_ptr, h_prev_ptr, w_ptr, c_prev_ptr, y_ptr, c_ptr, act_ptr, B, H, K,
                      tl.program_id(0), tl.program_id(1), BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, b_ptr, CELL)


@triton.jit
def step_forward_tile(xp_ptr, h_prev_ptr, w_ptr, c_prev_ptr, y_ptr, c_ptr, act_ptr, B, H, K, pid_b, pid_h,
                      BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                      b_ptr, CELL: tl.constexpr):
    """One step's (batch tile ``pid_b`` × hidden slice ``pid_h``) of :func:`step_forward_kernel`."""
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    units = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < B
    unit_ok = units < H
    w_ty = w_ptr.dtype.element_ty
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # LSTM i, GRU r, RNN the one gate
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # LSTM f, GRU z
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # LSTM g, GRU n
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)  # LSTM o
    # W_hhᵀ tile [k, unit] of gate q lives at W_hh[(q*H + unit), k].
    w_tile = w_ptr + units[None, :] * K + ks[:, None]
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + ks) < K
        h = tl.load(h_prev_ptr + rows[:, None] * K + (k0 + ks)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(w_ty)
        w_mask = k_ok[:, None] & unit_ok[None, :]
        acc_i = tl.dot(h, tl.load(w_tile + k0, mask=w_mask, other=0.0), acc_i, input_precision=PRECISION)
        if CELL <= 1:
            acc_f = tl.dot(h, tl.load(w_tile + H * K + k0, mask=w_mask, other=0.0), acc_f,
                           input_precision=PRECISION)
            acc_g = tl.dot(h, tl.load(w_tile + 2 * H * K + k0, mask=w_mask, other=0.0), acc_g,
                           input_precision=PRECISION)
        if CELL == 0:
            acc_o = tl.dot(h, tl.load(w_tile + 3 * H * K + k0, mask=w_mask, other=0.0), acc_o,
                           input_precision=PRECISION)

    mask = row_ok[:, None] & unit_ok[None, :]
    if CELL == 0:
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
        store_gate_blocks(act_ptr, gate, H, i, f, g, o, mask)
    elif CELL == 1:
        gate = rows[:, None] * 3 * H + units[None, :]
        state = rows[:, None] * H + units[None, :]
        hn = acc_g + tl.load(b_ptr + 2 * H + units, mask=unit_ok, other=0.0)[None, :]
        r, z, new, h_new = cm.gru_pointwise_forward(
            tl.load(xp_ptr + gate, mask=mask, other=0.0), tl.load(xp_ptr + gate + H, mask=mask, other=0.0),
            tl.load(xp_ptr + gate + 2 * H, mask=mask, other=0.0),
            acc_i + tl.load(b_ptr + units, mask=unit_ok, other=0.0)[None, :],
            acc_f + tl.load(b_ptr + H + units, mask=unit_ok, other=0.0)[None, :], hn,
            tl.load(c_prev_ptr + state, mask=mask, other=0.0))
        store_gate_blocks(act_ptr, rows[:, None] * 4 * H + units[None, :], H, r, z, new, hn, mask)
        tl.store(c_ptr + state, h_new, mask=mask)
        tl.store(y_ptr + state, h_new.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        state = rows[:, None] * H + units[None, :]
        pre = acc_i + tl.load(xp_ptr + state, mask=mask, other=0.0) + tl.load(b_ptr + units, mask=unit_ok,
                                                                                 other=0.0)[None, :]
        h_new = cm.rnn_pointwise_forward(pre, CELL == 3)
        tl.store(c_ptr + state, h_new, mask=mask)
        tl.store(y_ptr + state, h_new.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def step_backward_kernel(
    dg_next_ptr, w_ptr, dy_ptr, dc_ptr,  # (B,W) dt = dG_{t+1}, (G·H,H) dt, (B,H) fp32, (B,H) fp32 in/out
    act_ptr, c_ptr, c_prev_ptr,  # saved: (B,4H) fp32 (unused: RNN), c_t, c_{t-1} (GRU, RNN: h) (B,H) fp32
    dg_ptr,  # output (B,W) dt: LSTM W = 4H; GRU 6H (input side r, z, n, then recurrent side); RNN H
    B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    CELL: tl.constexpr = 0,
):
    step_backward_tile(dg_next_ptr, w_ptr, dy_ptr, dc_ptr, act_ptr, c_ptr, c_prev_ptr, dg_ptr, B, H,
                       tl.program_id(0), tl.program_id(1), BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, CELL)


@triton.jit
def step_backward_tile(dg_next_ptr, w_ptr, dy_ptr, dc_ptr, act_ptr, c_ptr, c_prev_ptr, dg_ptr, B, H, pid_b, pid_h,
                       BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                       CELL: tl.constexpr):
    """One step's (batch tile ``pid_b`` × hidden slice ``pid_h``) of :func:`step_backward_kernel`."""
    NG: tl.constexpr = 4 if CELL == 0 else (3 if CELL == 1 else 1)  # gates: rows of W_hh in units of H
    WIDTH: tl.constexpr = 6 if CELL == 1 else NG  # dG row length in units of H
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    units = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < B
    unit_ok = units < H
    dg_rec = dg_next_ptr
    if CELL == 1:
        dg_rec = dg_next_ptr + 3 * H  # the recurrent side feeds dh_{t}
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, NG * H, BLOCK_K):
        k_ok = (k0 + ks) < NG * H
        dg = tl.load(dg_rec + rows[:, None] * WIDTH * H + (k0 + ks)[None, :],
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + (k0 + ks)[:, None] * H + units[None, :],
                    mask=k_ok[:, None] & unit_ok[None, :], other=0.0)
        acc = tl.dot(dg, w, acc, input_precision=PRECISION)

    mask = row_ok[:, None] & unit_ok[None, :]
    gate = rows[:, None] * WIDTH * H + units[None, :]
    state = rows[:, None] * H + units[None, :]
    dh = acc + tl.load(dy_ptr + state, mask=mask, other=0.0)
    out_ty = dg_ptr.dtype.element_ty
    if CELL == 0:
        dc = tl.load(dc_ptr + state, mask=mask, other=0.0)
        i = tl.load(act_ptr + gate, mask=mask, other=0.0)
        f = tl.load(act_ptr + gate + H, mask=mask, other=0.0)
        g = tl.load(act_ptr + gate + 2 * H, mask=mask, other=0.0)
        o = tl.load(act_ptr + gate + 3 * H, mask=mask, other=0.0)
        c = tl.load(c_ptr + state, mask=mask, other=0.0)
        c_prev = tl.load(c_prev_ptr + state, mask=mask, other=0.0)
        dgi, dgf, dgg, dgo, dc_prev = lstm_pointwise_backward(dh, dc, i, f, g, o, c, c_prev)
        tl.store(dg_ptr + gate, dgi.to(out_ty), mask=mask)
        tl.store(dg_ptr + gate + H, dgf.to(out_ty), mask=mask)
        tl.store(dg_ptr + gate + 2 * H, dgg.to(out_ty), mask=mask)
        tl.store(dg_ptr + gate + 3 * H, dgo.to(out_ty), mask=mask)
        tl.store(dc_ptr + state, dc_prev, mask=mask)
    elif CELL == 1:
        dh += tl.load(dc_ptr + state, mask=mask, other=0.0)  # the direct part z_{t+1} ⊙ dh_{t+1}
        dr, dz, dn, dn_rec, direct = cm.gru_backward_from_saved(
            dh, act_ptr, rows[:, None] * 4 * H + units[None, :], H, tl.load(c_prev_ptr + state, mask=mask, other=0.0),
            mask)
        cm.gru_store_grads(dg_ptr, gate, H, dr, dz, dn, dn_rec, mask)
        tl.store(dc_ptr + state, direct, mask=mask)
    else:
        dpre = cm.rnn_pointwise_backward(dh, tl.load(c_ptr + state, mask=mask, other=0.0), CELL == 3)
        tl.store(dg_ptr + state, dpre.to(out_ty), mask=mask)


# ----------------------------------------------------------------------------- the persistent level's rescue
# The persistent level (lstm_persistent.py) needs every program of its grid resident at once. If a
# grid barrier runs out of spins (some program never became resident), the launch sets a flag and
# its results are garbage. The host cannot look at that flag without a synchronisation, so right
# after every persistent launch, on the same stream, one of these kernels runs: it reads the flag
# and exits at once when it is 0; otherwise one program per batch tile recomputes the whole
# sequence at the step level — every hidden slice of a step, then a CTA barrier, then the next
# step — which needs no other program, into the persistent launch's own buffers. The results are
# then the step level's, with no host read and a healthy CUDA context.


@triton.jit(do_not_specialize=["T"])
def rescue_forward_kernel(
    flag_ptr,  # int32: nonzero when the persistent forward launched before this one timed out
    xp_ptr, hbuf_ptr, w_ptr, c_all_ptr, act_ptr,  # (T,B,G·H) fp32, (T+1,B,H) dt, (G·H,H) dt, (T+1,B,H) fp32, (T,B,S·H)
    T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    b_ptr=None,  # (G·H,) fp32 b_hh: GRU, RNN
    CELL: tl.constexpr = 0,
):
    NG: tl.constexpr = 4 if CELL == 0 else (3 if CELL == 1 else 1)  # gate blocks of xp per row
    NS: tl.constexpr = 4 if CELL <= 1 else 0  # saved activations per row (cell_math.SAVED)
    if tl.load(flag_ptr) != 0:
        xp_t, h_t, c_t, act_t = xp_ptr, hbuf_ptr, c_all_ptr, act_ptr  # 64-bit pointers, advanced per step
        for _t in range(T):
            for pid_h in range(0, tl.cdiv(H, BLOCK_H)):
                step_forward_tile(xp_t, h_t, w_ptr, c_t, h_t + B * H, c_t + B * H, act_t, B, H, H,
                                  tl.program_id(0), pid_h, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, b_ptr, CELL)
            tl.debug_barrier()  # every slice of h_t is written before step t+1 reads it
            xp_t += NG * B * H
            h_t += B * H
            c_t += B * H
            act_t += NS * B * H


@triton.jit(do_not_specialize=["T"])
def rescue_backward_kernel(
    flag_ptr,  # int32: nonzero when the persistent backward launched before this one timed out
    # the persistent backward's buffers, pointers to their LAST slot: dy[T-1] fp32, acts[T-1] fp32,
    # c_all[T] fp32, dG[T] dt (= 0)
    dy_last_ptr, act_last_ptr, c_last_ptr, dg_last_ptr,
    w_ptr,  # (G·H,H) dt
    dc_ptr, dc_in_ptr,  # (B,H) fp32: the carried state gradient (out), its value at T (in, untouched)
    T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    CELL: tl.constexpr = 0,
):
    NG: tl.constexpr = 4 if CELL == 0 else (3 if CELL == 1 else 1)
    NS: tl.constexpr = 4 if CELL <= 1 else 0
    WIDTH: tl.constexpr = 6 if CELL == 1 else NG  # dG row length in units of H
    if tl.load(flag_ptr) != 0:
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        for pid_h in range(0, tl.cdiv(H, BLOCK_H)):  # restart from dL/dc_T: the failed launch changed dc
            units = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
            state = rows[:, None] * H + units[None, :]
            mask = (rows < B)[:, None] & (units < H)[None, :]
            tl.store(dc_ptr + state, tl.load(dc_in_ptr + state, mask=mask, other=0.0), mask=mask)
        tl.debug_barrier()
        dg_next, dy_t, act_t, c_t = dg_last_ptr, dy_last_ptr, act_last_ptr, c_last_ptr
        for _step in range(T):
            for pid_h in range(0, tl.cdiv(H, BLOCK_H)):
                step_backward_tile(dg_next, w_ptr, dy_t, dc_ptr, act_t, c_t, c_t - B * H, dg_next - WIDTH * B * H,
                                   B, H, tl.program_id(0), pid_h, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, CELL)
            tl.debug_barrier()  # every slice of dG_t is written before step t-1 reads it
            dg_next -= WIDTH * B * H
            dy_t -= B * H
            act_t -= NS * B * H
            c_t -= B * H


# ----------------------------------------------------------------------------- launchers


def _grid_and_meta(B: int, H: int, dtype: torch.dtype, config=step_config):
    cfg = config(B, H, dtype)
    grid = (triton.cdiv(B, cfg.block_b), triton.cdiv(H, cfg.block_h))
    meta = dict(BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k,
                PRECISION=dot_precision(dtype), num_warps=cfg.num_warps)
    return grid, meta


@on_tensor_device
def _forward_loop(xp: torch.Tensor, h0: torch.Tensor, s0: torch.Tensor, w_hh: torch.Tensor,
                  b_hh: torch.Tensor | None, cell: int):
    """As ``lstm_cell._forward_loop``, one launch per step; ``b_hh`` (G·H,) for GRU / RNN (None: zeros)."""
    T, B, GH = xp.shape
    H, dt, dev = GH // GATES[cell], w_hh.dtype, xp.device
    y = new_buffer((T, B, H), dt, dev)
    c_all = new_buffer((T + 1, B, H), torch.float32, dev)
    acts = new_buffer((T, B, SAVED[cell] * H), torch.float32, dev)
    c_all[0] = s0
    grid, meta = _grid_and_meta(B, H, dt)
    if cell != LSTM:
        meta.update(CELL=cell, b_ptr=torch.zeros(GH, device=dev) if b_hh is None else b_hh.float().contiguous())
    w_hh = w_hh.contiguous()
    h_prev = h0.to(dt).contiguous()
    for t in range(T):
        step_forward_kernel[grid](xp[t], h_prev, w_hh, c_all[t], y[t], c_all[t + 1],
                                  acts[t] if SAVED[cell] else c_all[t + 1], B, H, H, **meta)
        h_prev = y[t]
    return y, c_all, acts


@on_tensor_device
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


@on_tensor_device
def _backward_loop(dy: torch.Tensor, ds_n: torch.Tensor, w_hh: torch.Tensor, c_all: torch.Tensor,
                   acts: torch.Tensor, cell: int):
    """As ``lstm_cell._backward_loop``: ``(dG (T,B,W) dt, dh_rec (B,H) dt, ds (B,H) fp32)``."""
    T, B, H = dy.shape
    dt, dev, GH = w_hh.dtype, dy.device, GATES[cell] * H
    width = 2 * GH if cell == GRU else GH
    dG = new_buffer((T + 1, B, width), dt, dev)
    dG[T].zero_()  # dG_{T} = 0: nothing flows back from beyond the last step
    ds = ds_n.float().contiguous().clone()  # carried in place: must be our own contiguous buffer
    grid, meta = _grid_and_meta(B, H, dt)
    if cell != LSTM:
        meta["CELL"] = cell
    w_hh = w_hh.contiguous()
    for t in range(T - 1, -1, -1):
        step_backward_kernel[grid](dG[t + 1], w_hh, dy[t], ds, acts[t] if SAVED[cell] else dy[t], c_all[t + 1],
                                   c_all[t], dG[t], B, H, **meta)
    dh_rec = torch.mm(dG[0] if width == GH else dG[0, :, GH:], w_hh)
    return dG[:T], dh_rec, ds


def step_forward(xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor):
    """Same contract as :func:`lstm_cell.cell_forward`; one launch per time step."""
    return _forward_loop(xp, h0, c0, w_hh, None, LSTM)


def step_backward(dy: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor, c_all: torch.Tensor,
                  acts: torch.Tensor):
    """Same contract as :func:`lstm_cell.cell_backward`; one launch per time step."""
    return _backward_loop(dy, dc_n, w_hh, c_all, acts, LSTM)


def rnn_step_forward(xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None, cell: int):
    """Same contract as :func:`lstm_cell.rnn_cell_forward`; one launch per time step."""
    return _forward_loop(xp, h0, h0.float(), w_hh, b_hh, cell)


def rnn_step_backward(dy: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, acts: torch.Tensor, cell: int):
    """Same contract as :func:`lstm_cell.rnn_cell_backward`; one launch per time step."""
    T, B, H = dy.shape
    dG, dh_rec, direct = _backward_loop(dy, dy.new_zeros((B, H)), w_hh, h_all, acts, cell)
    return dG, dh_rec.float() + direct


def rescue_forward(flag: torch.Tensor, xp: torch.Tensor, hbuf: torch.Tensor, w_hh: torch.Tensor,
                   c_all: torch.Tensor, acts: torch.Tensor, b_hh: torch.Tensor | None, cell: int) -> None:
    """After a persistent forward (same buffers, same stream): recompute them at the step level if
    ``flag`` (int32, one element) is set; otherwise one tiny launch that reads it and exits."""
    T, B, GH = xp.shape
    H = GH // GATES[cell]
    grid, meta = _grid_and_meta(B, H, w_hh.dtype, rescue_config)
    if cell != LSTM:
        meta.update(CELL=cell, b_ptr=b_hh)
    rescue_forward_kernel[(grid[0],)](flag, xp, hbuf, w_hh, c_all, acts if SAVED[cell] else c_all, T, B, H, **meta)


def rescue_backward(flag: torch.Tensor, dy: torch.Tensor, acts: torch.Tensor, c_all: torch.Tensor,
                    dG: torch.Tensor, w_hh: torch.Tensor, dc: torch.Tensor, dc_in: torch.Tensor, cell: int) -> None:
    """After a persistent backward: the same for its buffers (``dG (T+1,B,W)`` with ``dG[T] = 0``;
    ``dc`` the carried gradient it wrote, ``dc_in`` its value before the launch)."""
    T, B, H = dy.shape
    grid, meta = _grid_and_meta(B, H, w_hh.dtype, rescue_config)
    if cell != LSTM:
        meta["CELL"] = cell
    rescue_backward_kernel[(grid[0],)](flag, dy[T - 1], acts[T - 1] if SAVED[cell] else dy[T - 1], c_all[T], dG[T],
                                       w_hh, dc, dc_in, T, B, H, **meta)
