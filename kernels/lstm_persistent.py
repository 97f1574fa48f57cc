"""Fusion level "persistent": ONE launch runs the whole sequence.

Program (p, q) of the ``(cdiv(H, BLOCK_H), cdiv(B, BLOCK_B))`` grid owns hidden units
``p*BLOCK_H … p*BLOCK_H + BLOCK_H − 1`` (all gates of them) of batch rows
``q*BLOCK_B … q*BLOCK_B + BLOCK_B − 1``. It loads its slice of W_hh once, before the time loop,
and keeps it on chip (the compiler places it in registers / shared memory); the fp32 state (the
LSTM's c, GRU's and the plain RNN's h) stays in registers. Each step it reads its rows of the full
h_{t-1} (written by every program of its batch tile in the previous step) from global memory,
computes its gates, writes its slice of h_t, and waits at a barrier (release-add on a counter,
acquire-spin until all programs arrived) before step t+1. Batch tiles never read each other's
rows, so each has its own counter and the barrier only waits for the ``cdiv(H, BLOCK_H)``
programs of its tile.

The barrier requires every program to be resident at once: the launcher keeps the grid at or
below the SM count (one program per SM). Under the interpreter programs run one after another,
so there the grid is one program: the same code, the barrier trivially satisfied. A spin limit
turns a would-be deadlock into an error flag that the host turns into an exception.

The H-long reduction runs over one power-of-two piece of BLOCK_K indices, plus, when
BLOCK_K2 > 0, a second piece of BLOCK_K2 (``tl.arange`` sizes are powers of two: H = 768 is
512 + 256 instead of 1024 with a quarter masked off).
Forward W slice, gate q:  W_hh[q*H + units, k]ᵀ  (K × BLOCK_H) per piece
Backward W slice, gate q: W_hh[q*H + k, units]   (K × BLOCK_H) per piece, reduction over all G·H rows
Buffers as in lstm_step, except ``hbuf (T+1, B, H) dt`` = [h0, h_1 … h_T] (y is ``hbuf[1:]``).

One skeleton per direction for every cell type, as at the cell and step levels: ``CELL``
(cell_math.py: 0 LSTM, 1 GRU, 2 RNN_TANH, 3 RNN_RELU) is a compile-time constant, G = 4, 3, 1 gate
blocks of W_hh are kept on chip, and each type compiles to its own gates alone (the LSTM's machine
code is what it was before GRU and RNN joined). GRU and RNN: ``b_ptr`` is b_hh (G·H,) fp32, added
to the recurrent product (GRU's b_hn inside r ⊙ (·)); the "c" buffers hold h_t in fp32; GRU's
backward carries the direct part z ⊙ dh of dh_{t-1} where the LSTM carries dc, and reads the
recurrent side [dr, dz, dn⊙r] of its (·, 6H) gradient rows.
"""

from __future__ import annotations

import logging
import os

import torch
import triton
import triton.language as tl

from . import cell_math as cm
from .buffers import new_buffer
from .cell_math import GATES, GRU, LSTM, SAVED
from .device import on_tensor_device
from .launch_config import (
    MAX_SPINS,
    cooperative_launch,
    dot_precision,
    launch_target,
    persistent_config,
    persistent_grid,
)
from .lstm_math import lstm_pointwise_backward, lstm_pointwise_forward, store_gate_blocks
from .lstm_step import _backward_loop as step_backward_loop
from .lstm_step import _forward_loop as step_forward_loop
from .lstm_step import rescue_backward, rescue_forward

log = logging.getLogger("lstm_triton")
CHECK_BARRIER_ON_HOST = os.environ.get("LSTM_TRITON_CHECK_BARRIER", "") not in ("", "0")

# ----------------------------------------------------------------------------- kernels


@triton.jit
def grid_barrier(counter_ptr, target, flag_ptr, waiting, MAX_SPINS: tl.constexpr):
    """Arrive at the counter and wait until ``target`` arrivals, polling at most ``MAX_SPINS`` times;
    returns ``waiting`` for the next barrier (int32: 1, or 0 once this program has timed out).

    Every barrier has its own budget, so a long sequence does not shrink it. A program whose budget
    runs out sets the flag and waits at no later barrier: its results no longer count (the rescue
    kernel launched after this one recomputes the sequence at the step level, lstm_step.py), and a
    program that never becomes resident costs one budget, not T. (Triton executes these scalar
    atomics on one thread and broadcasts the result; the bar.syncs around them order the other
    threads' stores and loads, as cooperative groups' grid.sync does.)
    """
    tl.debug_barrier()  # all threads of this program have issued their stores for this step
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    spins = waiting * MAX_SPINS
    while (arrived < target) & (spins > 0):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins -= 1
    if (arrived < target) & (waiting != 0):
        tl.store(flag_ptr, 1)
    tl.debug_barrier()
    return tl.where(arrived < target, 0, waiting)


@triton.jit
def load_gate_tiles(tile_ptr, gate_stride, mask, NG: tl.constexpr = 4):
    """The NG gate blocks of W_hh at ``tile_ptr + q*gate_stride`` (masked, 0 outside): LSTM
    [i, f, g, o], GRU [r, z, n], RNN its one gate; the slots past NG repeat the first (unused)."""
    w_i = tl.load(tile_ptr, mask=mask, other=0.0)
    w_f, w_g, w_o = w_i, w_i, w_i
    if NG >= 3:
        w_f = tl.load(tile_ptr + gate_stride, mask=mask, other=0.0)
        w_g = tl.load(tile_ptr + 2 * gate_stride, mask=mask, other=0.0)
    if NG == 4:
        w_o = tl.load(tile_ptr + 3 * gate_stride, mask=mask, other=0.0)
    return w_i, w_f, w_g, w_o


@triton.jit
def chunked_k(K0: tl.constexpr, KS: tl.constexpr, SPLIT: tl.constexpr):
    """Reduction indices k = K0 + s·KS + j of chunk s < SPLIT, j < KS: as W rows (SPLIT, KS, 1)
    and as operand columns (SPLIT, 1, KS)."""
    base = K0 + tl.arange(0, SPLIT)[:, None, None] * KS
    return base + tl.arange(0, KS)[None, :, None], base + tl.arange(0, KS)[None, None, :]


@triton.jit
def gate_dots(a, w_i, w_f, w_g, w_o, acc_i, acc_f, acc_g, acc_o, PRECISION: tl.constexpr, NG: tl.constexpr = 4):
    """acc_q += a @ w_q for the NG gates, chunk by chunk (batched dots, fp32 accumulation)."""
    acc_i = tl.dot(a, w_i, acc_i, input_precision=PRECISION)
    if NG >= 3:
        acc_f = tl.dot(a, w_f, acc_f, input_precision=PRECISION)
        acc_g = tl.dot(a, w_g, acc_g, input_precision=PRECISION)
    if NG == 4:
        acc_o = tl.dot(a, w_o, acc_o, input_precision=PRECISION)
    return acc_i, acc_f, acc_g, acc_o


@triton.jit(do_not_specialize=["T"])  # one compiled kernel for every sequence length
def persistent_forward_kernel(
    xp_ptr, w_ptr, hbuf_ptr, c_all_ptr, act_ptr,  # (T,B,G·H) fp32, (G·H,H) dt, (T+1,B,H) dt, (T+1,B,H) fp32, (T,B,4H)
    counter_ptr, flag_ptr,  # int32 barrier counters (one per batch tile, zeroed), int32 timeout flag
    T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    MAX_SPINS: tl.constexpr, BLOCK_K2: tl.constexpr = 0, SPLIT: tl.constexpr = 1,
    b_ptr=None,  # (G·H,) fp32 b_hh: GRU, RNN
    CELL: tl.constexpr = 0,
):
    NG: tl.constexpr = 4 if CELL == 0 else (3 if CELL == 1 else 1)  # gates: rows of W_hh in units of H
    NS: tl.constexpr = 4 if CELL <= 1 else 0  # saved activations per step, units of H (cell_math.SAVED)
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < B, units < H
    # W_hh[q*H + unit, k] as (chunk, k, unit) tiles: loaded once, reused every step
    kw, ka = chunked_k(0, BLOCK_K // SPLIT, SPLIT)
    w_i, w_f, w_g, w_o = load_gate_tiles(w_ptr + units[None, None, :] * H + kw, H * H,
                                         (kw < H) & unit_ok[None, None, :], NG)
    h_cols, h_mask = rows[None, :, None] * H + ka, row_ok[None, :, None] & (ka < H)
    if BLOCK_K2 > 0:  # the second reduction piece, k = BLOCK_K … BLOCK_K + BLOCK_K2 − 1
        kw2, ka2 = chunked_k(BLOCK_K, BLOCK_K2 // SPLIT, SPLIT)
        v_i, v_f, v_g, v_o = load_gate_tiles(w_ptr + units[None, None, :] * H + kw2, H * H,
                                             (kw2 < H) & unit_ok[None, None, :], NG)
        h2_cols, h2_mask = rows[None, :, None] * H + ka2, row_ok[None, :, None] & (ka2 < H)
    w_ty = w_ptr.dtype.element_ty

    mask = row_ok[:, None] & unit_ok[None, :]
    state = rows[:, None] * H + units[None, :]
    gate = rows[:, None] * NG * H + units[None, :]  # xp columns (LSTM: also the saved activations')
    if CELL != 0:  # b_hh per gate, added to the recurrent product every step
        b_r = tl.load(b_ptr + units, mask=unit_ok, other=0.0)[None, :]
        if CELL == 1:
            b_z = tl.load(b_ptr + H + units, mask=unit_ok, other=0.0)[None, :]
            b_n = tl.load(b_ptr + 2 * H + units, mask=unit_ok, other=0.0)[None, :]
            saved = rows[:, None] * 4 * H + units[None, :]  # r, z, n, hn
    c = tl.load(c_all_ptr + state, mask=mask, other=0.0)
    counter_ptr += tl.program_id(1)  # this batch tile's counter
    n_programs = tl.num_programs(0)  # programs that meet at it: the tile's hidden slices
    waiting = tl.full([], 1, tl.int32)  # 0 once this program has timed out at a barrier
    # Loop-carried base pointers advance by one step (64-bit pointer arithmetic, no overflow).
    xp_t, h_prev, c_t, act_t = xp_ptr, hbuf_ptr, c_all_ptr, act_ptr
    for t in range(T):
        # .cg: read h from L2, never from this SM's (non-coherent) L1: other programs wrote it.
        h = tl.load(h_prev + h_cols, mask=h_mask, other=0.0, cache_modifier=".cg").to(w_ty)
        zero = tl.zeros((SPLIT, BLOCK_B, BLOCK_H), dtype=tl.float32)
        ai, af, ag, ao = gate_dots(h, w_i, w_f, w_g, w_o, zero, zero, zero, zero, PRECISION, NG)
        if BLOCK_K2 > 0:
            h2 = tl.load(h_prev + h2_cols, mask=h2_mask, other=0.0, cache_modifier=".cg").to(w_ty)
            ai, af, ag, ao = gate_dots(h2, v_i, v_f, v_g, v_o, ai, af, ag, ao, PRECISION, NG)
        # the chunks' partial sums (one chunk per warp on a GPU) add up across warps here
        if CELL == 0:
            gi = tl.sum(ai, axis=0) + tl.load(xp_t + gate, mask=mask, other=0.0)
            gf = tl.sum(af, axis=0) + tl.load(xp_t + gate + H, mask=mask, other=0.0)
            gg = tl.sum(ag, axis=0) + tl.load(xp_t + gate + 2 * H, mask=mask, other=0.0)
            go = tl.sum(ao, axis=0) + tl.load(xp_t + gate + 3 * H, mask=mask, other=0.0)
            i, f, g, o, c, h_new = lstm_pointwise_forward(gi, gf, gg, go, c)
        elif CELL == 1:
            hn = tl.sum(ag, axis=0) + b_n
            r, z, n, c = cm.gru_pointwise_forward(
                tl.load(xp_t + gate, mask=mask, other=0.0), tl.load(xp_t + gate + H, mask=mask, other=0.0),
                tl.load(xp_t + gate + 2 * H, mask=mask, other=0.0), tl.sum(ai, axis=0) + b_r,
                tl.sum(af, axis=0) + b_z, hn, c)
            h_new = c
        else:
            c = cm.rnn_pointwise_forward(tl.sum(ai, axis=0) + tl.load(xp_t + gate, mask=mask, other=0.0) + b_r,
                                         CELL == 3)
            h_new = c
        h_prev += B * H
        c_t += B * H
        tl.store(h_prev + state, h_new.to(hbuf_ptr.dtype.element_ty), mask=mask)
        tl.store(c_t + state, c, mask=mask)
        if CELL == 0:
            tl.store(act_t + gate, i, mask=mask)
            tl.store(act_t + gate + H, f, mask=mask)
            tl.store(act_t + gate + 2 * H, g, mask=mask)
            tl.store(act_t + gate + 3 * H, o, mask=mask)
        elif CELL == 1:
            store_gate_blocks(act_t, saved, H, r, z, n, hn, mask)
        xp_t += NG * B * H
        act_t += NS * B * H
        waiting = grid_barrier(counter_ptr, (t + 1) * n_programs, flag_ptr, waiting, MAX_SPINS)


@triton.jit
def recurrent_grad(dg_next, a_cols, a_mask, w_i, w_f, w_g, w_o, acc, H, PRECISION: tl.constexpr,
                   NG: tl.constexpr = 4):
    """acc + dG_{t+1}[rows, q*H + k] @ W_hh[q*H + k, units] summed over the NG gates q, for the k
    of one reduction piece, chunk by chunk: one gate block at a time (a load, then its dot), so
    only one operand tile is live at once."""
    a = tl.load(dg_next + a_cols, mask=a_mask, other=0.0, cache_modifier=".cg")
    acc = tl.dot(a, w_i, acc, input_precision=PRECISION)
    if NG >= 3:
        a = tl.load(dg_next + a_cols + H, mask=a_mask, other=0.0, cache_modifier=".cg")
        acc = tl.dot(a, w_f, acc, input_precision=PRECISION)
        a = tl.load(dg_next + a_cols + 2 * H, mask=a_mask, other=0.0, cache_modifier=".cg")
        acc = tl.dot(a, w_g, acc, input_precision=PRECISION)
    if NG == 4:
        a = tl.load(dg_next + a_cols + 3 * H, mask=a_mask, other=0.0, cache_modifier=".cg")
        acc = tl.dot(a, w_o, acc, input_precision=PRECISION)
    return acc


@triton.jit(do_not_specialize=["T"])
def persistent_backward_kernel(
    # Pointers to the LAST slot of each buffer (computed on the host in 64 bits), walked backwards:
    dy_last_ptr, act_last_ptr, c_last_ptr, dg_last_ptr,  # dy[T-1] fp32, acts[T-1] fp32, c_all[T] fp32, dG[T] dt (= 0)
    w_ptr,  # (G·H,H) dt
    dc_ptr,  # (B,H) fp32: dL/dc_T in, dL/dc_0 out (GRU: the direct part z ⊙ dh of dh_T in, of dh_0 out)
    counter_ptr, flag_ptr,  # int32 barrier counters (one per batch tile, zeroed), int32 timeout flag
    T, B, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    MAX_SPINS: tl.constexpr, BLOCK_K2: tl.constexpr = 0, SPLIT: tl.constexpr = 1,
    CELL: tl.constexpr = 0,
):
    NG: tl.constexpr = 4 if CELL == 0 else (3 if CELL == 1 else 1)  # gates: rows of W_hh in units of H
    NS: tl.constexpr = 4 if CELL <= 1 else 0  # saved activations per step, units of H (cell_math.SAVED)
    WIDTH: tl.constexpr = 6 if CELL == 1 else NG  # dG row length in units of H (GRU: input side, recurrent side)
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < B, units < H
    # W_hh[q*H + k, unit] as (chunk, k, unit) tiles, kept for the whole loop
    kw, ka = chunked_k(0, BLOCK_K // SPLIT, SPLIT)
    w_i, w_f, w_g, w_o = load_gate_tiles(w_ptr + kw * H + units[None, None, :], H * H,
                                         (kw < H) & unit_ok[None, None, :], NG)
    a_cols, a_mask = rows[None, :, None] * WIDTH * H + ka, row_ok[None, :, None] & (ka < H)
    if BLOCK_K2 > 0:  # the second reduction piece, k = BLOCK_K … BLOCK_K + BLOCK_K2 − 1
        kw2, ka2 = chunked_k(BLOCK_K, BLOCK_K2 // SPLIT, SPLIT)
        v_i, v_f, v_g, v_o = load_gate_tiles(w_ptr + kw2 * H + units[None, None, :], H * H,
                                             (kw2 < H) & unit_ok[None, None, :], NG)
        a2_cols, a2_mask = rows[None, :, None] * WIDTH * H + ka2, row_ok[None, :, None] & (ka2 < H)
    if CELL == 1:  # dh_{t} comes from the recurrent side [dr, dz, dn⊙r] of dG_{t+1}
        a_cols += 3 * H
        if BLOCK_K2 > 0:
            a2_cols += 3 * H

    mask = row_ok[:, None] & unit_ok[None, :]
    state = rows[:, None] * H + units[None, :]
    gate = rows[:, None] * WIDTH * H + units[None, :]
    dc = tl.load(dc_ptr + state, mask=mask, other=0.0)
    out_ty = dg_last_ptr.dtype.element_ty
    counter_ptr += tl.program_id(1)  # this batch tile's counter
    n_programs = tl.num_programs(0)  # programs that meet at it: the tile's hidden slices
    waiting = tl.full([], 1, tl.int32)  # 0 once this program has timed out at a barrier
    dg_next, dy_t, act_t, c_t = dg_last_ptr, dy_last_ptr, act_last_ptr, c_last_ptr
    for step in range(T):
        # dh = dy_t + dG_{t+1} @ W_hh[:, units]: chunk partial sums, added across warps by tl.sum
        acc = tl.zeros((SPLIT, BLOCK_B, BLOCK_H), dtype=tl.float32)
        acc = recurrent_grad(dg_next, a_cols, a_mask, w_i, w_f, w_g, w_o, acc, H, PRECISION, NG)
        if BLOCK_K2 > 0:
            acc = recurrent_grad(dg_next, a2_cols, a2_mask, v_i, v_f, v_g, v_o, acc, H, PRECISION, NG)
        dh = tl.sum(acc, axis=0) + tl.load(dy_t + state, mask=mask, other=0.0)
        if CELL == 0:
            i = tl.load(act_t + gate, mask=mask, other=0.0)
            f = tl.load(act_t + gate + H, mask=mask, other=0.0)
            g = tl.load(act_t + gate + 2 * H, mask=mask, other=0.0)
            o = tl.load(act_t + gate + 3 * H, mask=mask, other=0.0)
            c = tl.load(c_t + state, mask=mask, other=0.0)
            c_prev = tl.load(c_t - B * H + state, mask=mask, other=0.0)
            dgi, dgf, dgg, dgo, dc = lstm_pointwise_backward(dh, dc, i, f, g, o, c, c_prev)
            dg_next -= 4 * B * H  # now dG_t, the slot this step writes
            tl.store(dg_next + gate, dgi.to(out_ty), mask=mask)
            tl.store(dg_next + gate + H, dgf.to(out_ty), mask=mask)
            tl.store(dg_next + gate + 2 * H, dgg.to(out_ty), mask=mask)
            tl.store(dg_next + gate + 3 * H, dgo.to(out_ty), mask=mask)
        elif CELL == 1:  # dc carries z_{t+1} ⊙ dh_{t+1}, the direct part of dh_t
            dr, dz, dn, dn_rec, dc = cm.gru_backward_from_saved(
                dh + dc, act_t, rows[:, None] * 4 * H + units[None, :], H,
                tl.load(c_t - B * H + state, mask=mask, other=0.0), mask)
            dg_next -= 6 * B * H
            cm.gru_store_grads(dg_next, gate, H, dr, dz, dn, dn_rec, mask)
        else:
            dpre = cm.rnn_pointwise_backward(dh, tl.load(c_t + state, mask=mask, other=0.0), CELL == 3)
            dg_next -= B * H
            tl.store(dg_next + state, dpre.to(out_ty), mask=mask)
        dy_t -= B * H
        act_t -= NS * B * H
        c_t -= B * H
        waiting = grid_barrier(counter_ptr, (step + 1) * n_programs, flag_ptr, waiting, MAX_SPINS)
    tl.store(dc_ptr + state, dc, mask=mask)


# ----------------------------------------------------------------------------- launchers


def _launch_meta(B: int, H: int, dtype: torch.dtype, device: torch.device, cell: int = LSTM):
    """(grid, meta) for a persistent launch; ValueError naming the reason when it cannot run."""
    cfg, reason = persistent_config(B, H, dtype, device, gates=GATES[cell])
    if cfg is None:
        raise ValueError(f"fusion='persistent' cannot run B={B}, H={H}, {dtype}: {reason}")
    meta = dict(BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k, BLOCK_K2=cfg.block_k2, SPLIT=cfg.split_k,
                PRECISION=dot_precision(dtype, launch_target(device)), MAX_SPINS=MAX_SPINS, num_warps=cfg.num_warps,
                # One stage: nothing may be prefetched across the barrier (it would read stale h / dG).
                num_stages=1)
    if cell != LSTM:  # the LSTM launches exactly as before GRU/RNN joined
        meta["CELL"] = cell
    if cooperative_launch(device):  # the driver refuses a grid whose programs cannot all be resident
        meta["launch_cooperative_grid"] = True
    return persistent_grid(B, H, cfg), meta


def _sync_buffers(grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed int32 barrier counters, one per batch tile, and the timeout flag (one allocation)."""
    sync = torch.zeros(grid[1] + 1, dtype=torch.int32, device=device)
    return sync[:grid[1]], sync[grid[1]:]


# Per device, the smallest grid (programs) the driver refused to launch cooperatively: larger
# grids go straight to the step level instead of failing again.
_refused_programs: dict[torch.device, int] = {}
# Barrier timeouts seen by the host check (LSTM_TRITON_CHECK_BARRIER=1), for tests and the GPU check.
barrier_timeouts = 0


def _is_cooperative_refusal(err: Exception) -> bool:
    """The driver's CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE (hipErrorCooperativeLaunchTooLarge on
    ROCm), as Triton's launcher reports it: the grid cannot be co-resident on this device (fewer
    SMs / CUs free than it has, e.g. under MPS or a green context, or a smaller GPU than the
    configuration assumed). Triton's HIP launcher gives hipGetErrorString's text, which HIP
    releases spell "hipErrorCooperativeLaunchTooLarge" or "cooperative launch too large"."""
    text = str(err).lower()
    letters = "".join(ch for ch in text if ch.isalpha())
    return "cooperative launch" in text or "cooperative_launch_too_large" in text or (
        "cooperativelaunchtoolarge" in letters)


def _launch(kernel, grid: tuple[int, int], args: tuple, meta: dict) -> bool:
    """Launch a persistent kernel; False (and a logged reason) when the driver refuses the grid."""
    device = args[0].device
    programs = grid[0] * grid[1]
    if programs >= _refused_programs.get(device, programs + 1):
        log.debug("persistent level: %d programs on %s were refused before; running the step level", programs,
                  device)
        return False
    try:
        kernel[grid](*args, **meta)
    except RuntimeError as err:
        if not _is_cooperative_refusal(err):
            raise
        _refused_programs[device] = min(programs, _refused_programs.get(device, programs))
        log.warning("persistent level: the driver refused a cooperative launch of %d programs on %s (%s); "
                    "this call and larger grids run the step level", programs, device, err)
        return False
    return True


def _check_barrier(flag: torch.Tensor) -> None:
    """With LSTM_TRITON_CHECK_BARRIER=1, read the timeout flag (a host synchronisation) and log a
    timeout; the results are right either way (the rescue kernel recomputed them). Off by default:
    no host read per call, so the layer can be captured in a CUDA graph."""
    global barrier_timeouts
    if not CHECK_BARRIER_ON_HOST:
        return
    if flag.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return  # no host read inside a CUDA graph capture: the rescue kernel still guards the result
    if int(flag.item()) != 0:
        barrier_timeouts += 1
        log.warning("persistent level: a grid barrier timed out (programs not co-resident); the call was "
                    "recomputed at the step level")


@on_tensor_device
def _forward(xp: torch.Tensor, h0: torch.Tensor, s0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
             cell: int):
    """One launch for all T steps of any cell type: ``xp (T,B,G·H) fp32``, ``h0 (B,H)``, ``s0 (B,H)``
    the first fp32 state (LSTM: c0; GRU, RNN: h0), ``w_hh (G·H,H) dt``, ``b_hh (G·H,)`` (GRU, RNN; None:
    zeros). Returns ``y (T,B,H) dt`` (a view of h_0..h_T), ``s_all (T+1,B,H) fp32``, ``acts (T,B,S·H) fp32``.
    A launch the driver refuses runs the step level instead; a barrier timeout is repaired on the
    device by :func:`lstm_step.rescue_forward`."""
    T, B, GH = xp.shape
    H, dt, dev = GH // GATES[cell], w_hh.dtype, xp.device
    grid, meta = _launch_meta(B, H, dt, dev, cell)
    hbuf = new_buffer((T + 1, B, H), dt, dev)
    c_all = new_buffer((T + 1, B, H), torch.float32, dev)
    acts = new_buffer((T, B, SAVED[cell] * H), torch.float32, dev)
    hbuf[0] = h0
    c_all[0] = s0
    if cell != LSTM:
        meta["b_ptr"] = torch.zeros(GH, device=dev) if b_hh is None else b_hh.float().contiguous()
    counters, flag = _sync_buffers(grid, dev)
    xp, w_hh = xp.contiguous(), w_hh.contiguous()
    act_arg = acts if SAVED[cell] else c_all
    if not _launch(persistent_forward_kernel, grid, (xp, w_hh, hbuf, c_all, act_arg, counters, flag, T, B, H), meta):
        return step_forward_loop(xp, h0, s0, w_hh, b_hh, cell)
    rescue_forward(flag, xp, hbuf, w_hh, c_all, acts, meta.get("b_ptr"), cell)
    _check_barrier(flag)
    return hbuf[1:], c_all, acts


@on_tensor_device
def _backward(dy: torch.Tensor, ds_n: torch.Tensor, w_hh: torch.Tensor, c_all: torch.Tensor, acts: torch.Tensor,
              cell: int):
    """Reverse of :func:`_forward`, one launch; ``ds_n (B,H) fp32`` seeds the carried fp32 state grad
    (LSTM: dc; GRU: the direct z ⊙ dh part of dh; RNN: unused). Returns ``dG (T,B,W) dt`` (W = G·H,
    GRU 6H: input then recurrent side), ``dh_rec (B,H) dt`` = recurrent side of step 0 @ W_hh, ``ds``.
    Refusals and timeouts as in :func:`_forward`."""
    T, B, H = dy.shape
    dt, dev, GH = w_hh.dtype, dy.device, GATES[cell] * H
    width = 2 * GH if cell == GRU else GH
    grid, meta = _launch_meta(B, H, dt, dev, cell)
    dG = new_buffer((T + 1, B, width), dt, dev)
    dG[T].zero_()
    dc_in = ds_n.float().contiguous()
    dc = dc_in.clone()  # carried in and out: must be our own contiguous buffer
    counters, flag = _sync_buffers(grid, dev)
    w_hh = w_hh.contiguous()
    dy = dy.contiguous()
    args = (dy[T - 1], acts[T - 1] if SAVED[cell] else dy[T - 1], c_all[T], dG[T], w_hh, dc, counters, flag, T, B, H)
    if not _launch(persistent_backward_kernel, grid, args, meta):
        return step_backward_loop(dy, ds_n, w_hh, c_all, acts, cell)
    rescue_backward(flag, dy, acts, c_all, dG, w_hh, dc, dc_in, cell)
    _check_barrier(flag)
    dh0 = torch.mm(dG[0] if width == GH else dG[0, :, GH:], w_hh)
    return dG[:T], dh0, dc


def persistent_forward(xp: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor):
    """Same contract as :func:`lstm_step.step_forward`; one launch for all T steps."""
    return _forward(xp, h0, c0, w_hh, None, LSTM)


def persistent_backward(dy: torch.Tensor, dc_n: torch.Tensor, w_hh: torch.Tensor, c_all: torch.Tensor,
                        acts: torch.Tensor):
    """Same contract as :func:`lstm_step.step_backward`; one launch for all T steps."""
    return _backward(dy, dc_n, w_hh, c_all, acts, LSTM)


def rnn_persistent_forward(xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                           cell: int):
    """Same contract as :func:`lstm_cell.rnn_cell_forward` (GRU, RNN); one launch for all T steps."""
    return _forward(xp, h0, h0.float(), w_hh, b_hh, cell)


def rnn_persistent_backward(dy: torch.Tensor, w_hh: torch.Tensor, h_all: torch.Tensor, acts: torch.Tensor,
                            cell: int):
    """Same contract as :func:`lstm_cell.rnn_cell_backward`; one launch for all T steps."""
    T, B, H = dy.shape
    dG, dh_rec, direct = _backward(dy, dy.new_zeros((B, H)), w_hh, h_all, acts, cell)
    return dG, dh_rec.float() + direct
