"""The Triton recurrence as two PyTorch operators, so that PyTorch's tooling sees through the layer.

``torch.ops.lstm_triton.recurrence(xp, h0, c0, w_hh, w_hr, fusion) -> (y, c_n, c_all, acts)``
    xp (T,B,4H) fp32 (input projection with both biases), h0 (B,P) dt, c0 (B,H) dt, w_hh (4H,P) dt,
    w_hr (P,H) dt or None (nn.LSTM's proj_size; P = H without it);
    y (T,B,P) dt, c_n (B,H) dt, and the saved intermediates c_all (T+1,B,H) fp32, acts (T,B,4H) fp32
    (returned as outputs because an operator may not hide state; they are not differentiable).
``torch.ops.lstm_triton.recurrence_backward(dy, dc_n, w_hh, w_hr, c_all, acts, fusion) -> (dG, dh0, dc0, dw_hr)``
    dy (T,B,P) fp32 already holding dL/dh_n in its last step, dc_n (B,H) fp32;
    dG (T,B,4H) dt (pre-activation gradients), dh0 (B,P) dt, dc0 (B,H) fp32, dw_hr (P,H) dt
    (empty without a projection).

``fusion`` is the requested level (auto / cell / step / persistent), resolved inside each operator
by :func:`lstm_triton.layers.backend.choose_fusion` from (B, H, dtype, device): the decision (which reads
the GPU's properties) runs, and is logged, when the operator runs — also in a compiled graph or an
exported program — and forward and backward resolve it identically.
Each operator has a fake (meta) implementation with symbolic shapes, so ``torch.compile`` traces a
model holding the layer without a graph break and without specialising on T, and
``torch.export`` captures it. The autograd formula (registered below, in ``autograd.py``) calls
``recurrence_backward``; a backward that must itself be differentiable (``create_graph=True``,
``torch.func``) runs the same math in plain torch ops instead.

Every output owns its storage: no output is a view of another or of an input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.lstm_cell import cell_backward, cell_backward_projected, cell_forward, cell_forward_projected
from ..kernels.lstm_persistent import persistent_backward, persistent_forward
from ..kernels.lstm_step import step_backward, step_forward, step_forward_projected
from .backend import FUSIONS, choose_fusion

FORWARD = {"cell": cell_forward, "step": step_forward, "persistent": persistent_forward}
BACKWARD = {"cell": cell_backward, "step": step_backward, "persistent": persistent_backward}


def _owned(t: Tensor) -> Tensor:
    """``t`` itself when it is the whole of its storage, else a compact copy (a launcher may return a
    slice of a larger buffer, e.g. persistent's y = h_all[1:]; the slice would keep it alive)."""
    if t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _check_fusion(fusion: str) -> None:
    if fusion not in FUSIONS:
        raise ValueError(f"lstm_triton::recurrence: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def _level(fusion: str, B: int, H: int, dt: torch.dtype, device, w_hr: Tensor | None) -> str:
    return choose_fusion(fusion, B, H, dt, device, projected=w_hr is not None)


@torch.library.custom_op("lstm_triton::recurrence", mutates_args=())
def recurrence(xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Tensor | None,
               fusion: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_fusion(fusion)
    T, B, H4 = xp.shape
    H, P, dt = H4 // 4, w_hh.shape[1], w_hh.dtype
    if B * H == 0:  # nothing to compute (the kernels cannot launch an empty grid)
        y = xp.new_empty((T, B, P), dtype=dt)
        c_all = c0.float().expand(T + 1, B, H).clone()
        return y, c0.to(dt).clone(), c_all, xp.new_empty((T, B, H4))
    level = _level(fusion, B, H, dt, xp.device, w_hr)
    if w_hr is not None:  # choose_fusion resolves a projected layer to cell or step
        projected = cell_forward_projected if level == "cell" else step_forward_projected
        y, c_all, acts = projected(xp, h0, c0, w_hh, w_hr)
    else:
        y, c_all, acts = FORWARD[level](xp, h0, c0, w_hh)
    return _owned(y), c_all[-1].to(dt, copy=True), c_all, acts


@recurrence.register_fake
def _recurrence_fake(xp, h0, c0, w_hh, w_hr, fusion):
    T, B, H4 = xp.shape
    H, P, dt = H4 // 4, w_hh.shape[1], w_hh.dtype
    return (xp.new_empty((T, B, P), dtype=dt), xp.new_empty((B, H), dtype=dt),
            xp.new_empty((T + 1, B, H), dtype=torch.float32), xp.new_empty((T, B, H4), dtype=torch.float32))


@torch.library.custom_op("lstm_triton::recurrence_backward", mutates_args=())
def recurrence_backward(dy: Tensor, dc_n: Tensor, w_hh: Tensor, w_hr: Tensor | None, c_all: Tensor, acts: Tensor,
                        fusion: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_fusion(fusion)
    T, B, P = dy.shape
    H, dt = c_all.shape[2], w_hh.dtype
    no_dw_hr = dy.new_empty((0,), dtype=dt)
    if B * H == 0:
        dw_hr = no_dw_hr if w_hr is None else torch.zeros_like(w_hr)
        return (dy.new_zeros((T, B, 4 * H), dtype=dt), dy.new_zeros((B, P), dtype=dt),
                dc_n.to(torch.float32, copy=True), dw_hr)
    # dG may be a slice of a (T+1)-step buffer: it never reaches the user (the layer's backward
    # consumes it), so it is returned as is. dh0 and dc0 are fresh tensors.
    if w_hr is not None:  # both levels (lstm_step.step_forward_projected says why)
        return cell_backward_projected(dy.contiguous(), dc_n, w_hh, w_hr, c_all, acts)
    level = _level(fusion, B, H, dt, dy.device, None)
    return (*BACKWARD[level](dy.contiguous(), dc_n, w_hh, c_all, acts), no_dw_hr)


@recurrence_backward.register_fake
def _recurrence_backward_fake(dy, dc_n, w_hh, w_hr, c_all, acts, fusion):
    T, B, P = dy.shape
    H, dt = c_all.shape[2], w_hh.dtype
    dw_hr = dy.new_empty((0,), dtype=dt) if w_hr is None else torch.empty_like(w_hr)
    return (dy.new_empty((T, B, 4 * H), dtype=dt), dy.new_empty((B, P), dtype=dt),
            dy.new_empty((B, H), dtype=torch.float32), dw_hr)


def _register_autograd() -> None:
    from .autograd import recurrence_backward_formula, recurrence_setup_context

    recurrence.register_autograd(recurrence_backward_formula, setup_context=recurrence_setup_context)


_register_autograd()
