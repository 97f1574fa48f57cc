"""The GRU and plain-RNN cells' pointwise math as @triton.jit helpers (the LSTM's is in
``lstm_math.py``), and the cell-type constants the kernel skeletons take as ``CELL: tl.constexpr``.

Everything here is fp32. The recurrent product ``hw = h_{t-1} W_hhᵀ + b_hh`` arrives per gate,
so GRU can put ``b_hn`` inside ``r ⊙ (·)`` as nn.GRU does.

GRU (gate order r, z, n; ``x*`` input side with b_ih, ``h*`` recurrent side with b_hh):
    r = σ(xr + hr), z = σ(xz + hz), n = tanh(xn + r⊙hn), h = (1 − z)⊙n + z⊙h_prev
  backward, dh = total upstream grad of h_t:
    dn_pre = dh⊙(1 − z)⊙(1 − n²),  dz_pre = dh⊙(h_prev − n)⊙z(1 − z),  dr_pre = dn_pre⊙hn⊙r(1 − r)
    input side [dr_pre, dz_pre, dn_pre], recurrent side [dr_pre, dz_pre, dn_pre⊙r],
    dh_prev = z⊙dh (direct) + recurrent side @ W_hh (torch's GEMM).
RNN: h = act(pre), act = tanh or relu; dpre = dh⊙(1 − h²) or dh⊙[h > 0] (torch's relu
backward passes the gradient where the input is > 0, i.e. where h > 0).
"""

import triton
import triton.language as tl

from .lstm_math import tanh

LSTM, GRU, RNN_TANH, RNN_RELU = 0, 1, 2, 3
CELL_IDS = {"LSTM": LSTM, "GRU": GRU, "RNN_TANH": RNN_TANH, "RNN_RELU": RNN_RELU}  # nn.RNNBase.mode -> id
GATES = {LSTM: 4, GRU: 3, RNN_TANH: 1, RNN_RELU: 1}  # gate rows of W_ih / W_hh, in units of H
SAVED = {LSTM: 4, GRU: 4, RNN_TANH: 0, RNN_RELU: 0}  # saved activations per step, units of H


@triton.jit
def gru_pointwise_forward(xr, xz, xn, hr, hz, hn, h_prev):
    """Input- and recurrent-side pre-activations and h_{t-1} (fp32) -> (r, z, n, h_t)."""
    r = tl.sigmoid(xr + hr)
    z = tl.sigmoid(xz + hz)
    n = tanh(xn + r * hn)
    h = (1.0 - z) * n + z * h_prev
    return r, z, n, h


@triton.jit
def gru_pointwise_backward(dh, r, z, n, hn, h_prev):
    """-> (dr_pre, dz_pre, dn_pre (input side), dn_pre⊙r (recurrent side of n), z⊙dh (direct dh_prev))."""
    dn_pre = dh * (1.0 - z) * (1.0 - n * n)
    dz_pre = dh * (h_prev - n) * z * (1.0 - z)
    dr_pre = dn_pre * hn * r * (1.0 - r)
    return dr_pre, dz_pre, dn_pre, dn_pre * r, dh * z


@triton.jit
def rnn_pointwise_forward(pre, RELU: tl.constexpr):
    if RELU:
        return tl.maximum(pre, 0.0, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN, as torch.relu
    else:
        return tanh(pre)


@triton.jit
def rnn_pointwise_backward(dh, h, RELU: tl.constexpr):
    if RELU:
        return tl.where(h > 0.0, dh, 0.0)
    else:
        return dh * (1.0 - h * h)


# GRU's memory traffic per (row, unit), the same at every fusion level (the forward saves r, z, n,
# hn with lstm_math.store_gate_blocks): ``saved`` is the offset of r in the (·,4H) saved
# activations, ``gate`` that of dr in the (·,6H) gradients; masked elements read 0.


@triton.jit
def gru_backward_from_saved(dh, act_ptr, saved, H, h_prev, mask):
    """:func:`gru_pointwise_backward` on the saved r, z, n, hn."""
    return gru_pointwise_backward(
        dh, tl.load(act_ptr + saved, mask=mask, other=0.0), tl.load(act_ptr + saved + H, mask=mask, other=0.0),
        tl.load(act_ptr + saved + 2 * H, mask=mask, other=0.0), tl.load(act_ptr + saved + 3 * H, mask=mask, other=0.0),
        h_prev)


@triton.jit
def gru_store_grads(dg_ptr, gate, H, dr, dz, dn, dn_rec, mask):
    """Input side [dr, dz, dn], then recurrent side [dr, dz, dn⊙r], in dG's dtype."""
    out_ty = dg_ptr.dtype.element_ty
    tl.store(dg_ptr + gate, dr.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + H, dz.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + 2 * H, dn.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + 3 * H, dr.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + 4 * H, dz.to(out_ty), mask=mask)
    tl.store(dg_ptr + gate + 5 * H, dn_rec.to(out_ty), mask=mask)
