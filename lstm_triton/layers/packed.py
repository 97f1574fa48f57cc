"""Variable-length batches on the fused kernels: padded input with ``lengths``, and PackedSequence.

The kernels need no change for this. The layer writes fixed pre-activations into the input
projection of every step past a row's length, before the time loop (one ``torch.where`` per layer
call, no per-step work, every fusion level), chosen per cell so that those steps cannot change
what the row outputs and no gradient flows back out of them (``PADDED_STEP``):

LSTM  (i, f, g, o) = (−inf, +inf, 0, −inf)  ⇒ i = 0, f = 1, o = 0  ⇒  c_t = c_{t−1} exactly,
      h_t = 0. The saved activations give dG = 0 for every gate and dc_{t−1} = f·dc_t = dc_t: the
      padded steps vanish from every gradient and the cell gradient flows through unchanged.
GRU   (r, z, n) = (0, +inf, 0)  ⇒ z = 1  ⇒  h_t = h_{t−1} exactly; z(1 − z) = 0 and 1 − z = 0 make
      every gate gradient 0, and dh passes through the direct term z ⊙ dh.
RNN   pre = −inf  ⇒ h = tanh(−inf) = −1 or relu(−inf) = 0, whose derivative is exactly 0. No gate
      can freeze the row, and none needs to: those steps come after everything the row outputs,
      and with a zero derivative no gradient leaves them, whatever arrives.

``h_n`` is each row's output at its own last step (gathered, so autograd routes its gradient
there; for the frozen LSTM / GRU state this equals the final step) and ``c_n`` the final cell
state (frozen since the row's end). The output past each length is zeroed afterwards.

Semantics follow nn's layers on the packed equivalent (lengths 1…T; here 0 is also allowed: the
row keeps its initial state and outputs zeros). The reverse direction of a bidirectional layer
starts at each row's own end (:func:`reverse_padded`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

_INF = float("inf")


# Lengths given on the host, copied to a device once per distinct content (least recently used
# first out): a training loop or a CUDA graph replays the same few patterns, and a copy to the
# device per call would serialise launches and cannot be captured. A pattern used while a CUDA graph
# is captured stays (the graph reads its address on every replay). Shared by threads: one lock.
_device_copies: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_captured: set[tuple] = set()
_lock = threading.Lock()
DEVICE_COPIES_KEPT = 64


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def on_device(values: tuple[int, ...], device) -> torch.Tensor:
    """``values`` as an int64 (B,) tensor on ``device``, from the cache when it holds them (never
    written to: callers only read it). Under ``torch.compile`` a constant of the graph instead."""
    device = torch.device(device)
    if torch.compiler.is_compiling():  # dynamo would guard on the cache's contents and recompile
        return torch.tensor(values, dtype=torch.int64, device=device)
    key = (device, values)
    with _lock:
        cached = _device_copies.get(key)
        if cached is None:
            cached = torch.tensor(values, dtype=torch.int64, device=device)
            _device_copies[key] = cached
        _device_copies.move_to_end(key)
        if _capturing(device):
            _captured.add(key)
        excess = len(_device_copies) - DEVICE_COPIES_KEPT
        if excess > 0:  # least recently used first, never a pattern a captured graph reads
            for old in [k for k in _device_copies if k not in _captured][:excess]:
                del _device_copies[old]
    return cached


def _checked_on_device(values: tuple[int, ...], T: int, device: torch.device) -> torch.Tensor:
    """Host lengths checked against [0, T] on the host, then :func:`on_device`."""
    if values and (min(values) < 0 or max(values) > T):
        raise ValueError(f"lengths must lie in [0, T={T}], got values from {min(values)} to {max(values)}")
    return on_device(values, device)


def check_lengths(lengths, T: int, B: int, device: torch.device) -> torch.Tensor:
    """``lengths`` (sequence of B ints or a 1-D integer tensor, any device) -> int64 (B,) on ``device``.

    Lengths on the host (a list, numpy array or CPU tensor, as nn's ``pack_padded_sequence``
    wants them) are checked there and reach the device through :func:`on_device`: no host read of
    device memory, no copy per call once seen. A tensor already on a GPU is checked with one read
    to the host — except while a CUDA graph is being captured, where no read is possible: there its
    values are clamped to [0, T] on the device instead.

    Raises ValueError naming ``lengths`` when it is not 1-D of size B with values in [0, T], or is a
    meta tensor (no values) for an input that has values."""
    device = torch.device(device)
    if torch.is_tensor(lengths) and lengths.device.type == "meta" and device.type != "meta":
        raise ValueError(f"lengths must hold values: got a meta tensor (shape only) for an input on {device}")
    on_host = not torch.is_tensor(lengths) or lengths.device.type == "cpu"
    if isinstance(lengths, (list, tuple)) and all(type(v) is int for v in lengths) and device.type != "meta":
        values = tuple(lengths)  # plain Python ints: checked without making a tensor
        if len(values) != B:
            raise ValueError(f"lengths must be a 1-D sequence of {B} integers (one per batch row), got shape "
                             f"({len(values)},)")
        return _checked_on_device(values, T, device)
    try:
        t = torch.as_tensor(lengths) if not torch.is_tensor(lengths) else lengths
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"lengths must be a 1-D sequence of {B} integers (one per batch row), got "
                         f"{type(lengths).__name__} {lengths!r:.60}") from None
    if t.numel() == 0 and not torch.is_tensor(lengths):
        t = t.to(torch.int64)  # torch.as_tensor([]) is float32: an empty list is an empty batch's lengths
    if t.dim() != 1 or t.numel() != B:
        raise ValueError(f"lengths must be a 1-D sequence of {B} integers (one per batch row), got shape "
                         f"{tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"lengths must hold integers, got {t.dtype}")
    if device.type == "meta":
        return t.to(device=device, dtype=torch.int64)
    if on_host:
        return _checked_on_device(tuple(t.tolist()), T, device)
    t = t.to(device=device, dtype=torch.int64)
    if _capturing(device):
        return t.clamp(0, T)
    if B:
        low, high = torch.stack([t.min(), t.max()]).tolist()  # the one host read: lengths on the device
        if low < 0 or high > T:
            raise ValueError(f"lengths must lie in [0, T={T}], got values from {low} to {high}")
    return t


def active_steps(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """``(T, B)`` bool: True where step t < the row's length."""
    return torch.arange(T, device=lengths.device)[:, None] < lengths[None, :]


# Pre-activations of a step past a row's length, per gate block (module docstring).
PADDED_STEP = {
    "LSTM": (-_INF, _INF, 0.0, -_INF),  # i = 0, f = 1, o = 0: c passes through, h = 0
    "GRU": (0.0, _INF, 0.0),            # z = 1: h_t = h_{t−1}; r, n finite and their gradients 0
    "RNN_TANH": (-_INF,),               # h = −1, derivative 0: no gradient flows out
    "RNN_RELU": (-_INF,),               # h = 0, derivative 0
}


def mask_padded_steps(xp: torch.Tensor, active: torch.Tensor, mode: str = "LSTM") -> torch.Tensor:
    """``xp (T, B, G·H)`` fp32 gate pre-activations in nn's gate order, ``active (T, B)`` bool ->
    the same with the steps past each row's length set to ``PADDED_STEP[mode]`` (module docstring)."""
    blocks = PADDED_STEP[mode]
    H = xp.shape[-1] // len(blocks)
    pad = torch.cat([xp.new_full((H,), value) for value in blocks])  # filled on the device: no copy from the host
    return torch.where(active[..., None], xp, pad)


def zero_padding(x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``x (T, B, I)`` with the steps past each row's length set to 0, ``active (T, B)`` bool.
    Padding may hold anything (NaN from ``torch.empty``); nn never reads it, and neither may the
    input projection's weight gradient, Σ dxp ⊗ x, where 0 · NaN would be NaN."""
    return torch.where(active[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def last_hidden(y: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Each row's output at its own last step: ``y (T, B, H)``, ``lengths (B,)`` -> ``(B, H)``;
    ``h0`` where the length is 0. Differentiable (a gather), so dL/dh_n lands on that step."""
    T, B, H = y.shape
    index = (lengths - 1).clamp(min=0).view(1, B, 1).expand(1, B, H)
    last = y.gather(0, index)[0]
    return torch.where((lengths > 0)[:, None], last, h0.to(y.dtype))


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x (T, B, *)`` within its own length (padding stays in place): the
    input of a reverse direction. Its own inverse; differentiable."""
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    index = index.view(T, B, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def _sorted_lengths(batch_sizes: torch.Tensor) -> torch.Tensor:
    """The lengths of a PackedSequence's rows in its sorted order, from its ``batch_sizes`` (CPU
    int64, as PackedSequence keeps them): row j runs the steps whose batch size exceeds j."""
    rows = batch_sizes[:1].tolist()  # the first step's batch size is the number of rows
    return (batch_sizes[None, :] > torch.arange(rows[0] if rows else 0)[:, None]).sum(1)


def unpack(seq: PackedSequence) -> tuple[torch.Tensor, torch.Tensor]:
    """PackedSequence -> ``(padded (T, B, *) in the caller's batch order, lengths (B,) int64 on the
    data's device)``. No host read of device memory and, once a batch-size pattern has been seen,
    no copy to the device (torch's ``pad_packed_sequence`` reads ``unsorted_indices`` to the host)."""
    padded, sorted_lengths = torch._VF._pad_packed_sequence(seq.data, seq.batch_sizes, False, 0.0,
                                                            seq.batch_sizes.size(0))
    lengths = on_device(tuple(sorted_lengths.tolist()), padded.device)
    if seq.unsorted_indices is not None:  # back to the caller's order, on the device
        padded = padded.index_select(1, seq.unsorted_indices)
        lengths = lengths.index_select(0, seq.unsorted_indices)
    return padded, lengths


def repack(padded: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``padded (T, B, *)`` (caller's batch order) exactly as ``like`` is packed: same
    ``batch_sizes``, ``sorted_indices`` and ``unsorted_indices`` (nn.LSTM's output contract). The
    lengths come from ``like.batch_sizes`` on the host: no read of device memory."""
    if like.sorted_indices is not None:
        padded = padded.index_select(1, like.sorted_indices)
    data, _ = torch._VF._pack_padded_sequence(padded, _sorted_lengths(like.batch_sizes), False)
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


# ----------------------------------------------------------------------------- torch's kernel


def _zero_length_rows(lengths: torch.Tensor, y: torch.Tensor, states, initial, batch_dim: int):
    """Rows of length 0 (which packing cannot express): output 0, states as given, in the dtype nn
    gave the other rows' (under autocast the given states can be of another)."""
    empty = lengths == 0
    shape = [1] * y.dim()
    shape[batch_dim] = -1
    y = torch.where(empty.view(shape), torch.zeros((), dtype=y.dtype, device=y.device), y)
    states = tuple(torch.where(empty.view(1, -1, 1), s0.to(s.dtype), s) for s, s0 in zip(states, initial))
    return y, states


def torch_layer(x, states: tuple, weights: list, has_bias: bool, lengths: torch.Tensor, mode: str = "LSTM"):
    """One layer on torch's own kernel with ``lengths`` (the reference path of ``backend='torch'``):
    ``x (T,B,I)``, ``states`` (h0, c0) for the LSTM or (h0,) for GRU / RNN, each ``(B,·)``, ``lengths
    (B,)``, ``mode`` nn.RNNBase.mode -> ``(y (T,B,H), final states tuple)``."""
    T = x.shape[0]
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), enforce_sorted=False)
    order, back = packed.sorted_indices, packed.unsorted_indices
    hx = tuple(s.index_select(0, order)[None] for s in states)
    fn = getattr(torch._VF, mode.lower())  # lstm, gru, rnn_tanh, rnn_relu
    data, *finals = fn(packed.data, packed.batch_sizes, hx if mode == "LSTM" else hx[0], weights, has_bias, 1, 0.0,
                       False, False)
    y, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, order, back), total_length=T)
    y, finals = _zero_length_rows(lengths, y, tuple(f.index_select(1, back) for f in finals),
                                  tuple(s[None] for s in states), batch_dim=1)
    return y, tuple(f[0] for f in finals)


def torch_module_forward(forward, input: torch.Tensor, hx, lengths: torch.Tensor, batch_first: bool):
    """``nn.LSTM.forward`` (``forward``) on padded ``input`` with ``lengths`` and states ``hx``, via
    packing; the output is padded again to the input's length. An empty batch needs no packing
    (nor can it be packed): nn's own forward on the dense input gives its empty results."""
    if input.size(0 if batch_first else 1) == 0:
        return forward(input, hx)
    T = input.size(1 if batch_first else 0)
    packed = pack_padded_sequence(input, lengths.clamp(min=1).cpu(), batch_first=batch_first, enforce_sorted=False)
    out, states = forward(packed, hx)
    y, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return _zero_length_rows(lengths, y, states, hx, batch_dim=0 if batch_first else 1)
