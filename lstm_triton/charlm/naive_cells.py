"""d2l's scratch GRU and plain RNN (tanh or relu), one Python step per time step, and exact
conversion of every naive layer (LSTM included), and of stacks of them (``naive_stack.py``), to and
from PyTorch's layout.

Parameters are d2l's, with d2l's names, shapes, draw order and init (``randn * 0.01`` weights,
zero biases):

* GRU (``gru_scratch``): ``W_xz, W_hz, b_z`` (update), ``W_xr, W_hr, b_r`` (reset),
  ``W_xh, W_hh, b_h`` (candidate); ``W_x* (I×H)``, ``W_h* (H×H)``, ``b_* (H)``.
* RNN (``rnn_scratch``): ``W_xh (I×H)``, ``W_hh (H×H)``, ``b_h (H)``;
  ``H = φ(X W_xh + H W_hh + b_h)`` with φ = tanh (d2l) or relu (``nn.RNN``'s other choice).

**Where the reset gate multiplies.** d2l's text computes the candidate as
``H̃ = tanh(X W_xh + (R ⊙ H) W_hh + b_h)``; PyTorch's ``nn.GRU`` (and cuDNN) as
``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``. ``(R ⊙ H) W_hh`` and ``R ⊙ (H W_hh)`` differ
whenever R is not constant across hidden units, so no weight conversion can make the two equal.
The naive GRU here computes PyTorch's form, ``H̃ = tanh(X W_xh + b_h + R ⊙ (H W_hh + b_hn))``,
in d2l's loop style and names: then conversion is exact both ways and every implementation
(naive, ``nn.GRU``, the Triton kernels) computes one function from identical weights, which is
what makes their perplexities comparable. (d2l's own concise chapter trains ``nn.GRU``, i.e. this
form, to the same perplexity range as its scratch model.) The rest is d2l's and PyTorch's alike:
``Z = σ(X W_xz + H W_hz + b_z)``, ``R = σ(X W_xr + H W_hr + b_r)``, ``H = Z ⊙ H + (1 − Z) ⊙ H̃``.

``b_hn`` (nn.GRU's ``bias_hh`` for n) sits inside ``R ⊙ (…)``, so unlike every other bias it cannot
be folded into an input-side bias. d2l's model has no such bias: with ``recurrent_bias=False``
(the default, d2l's model) the layer has d2l's nine parameters and ``b_hn ≡ 0``; with
``recurrent_bias=True`` it also trains a ``b_hn (H)``, which is what ``from_nn_weights`` builds when
the nn weights carry a nonzero one (nn.GRU's default init does).

PyTorch's row blocks: GRU ``[r, z, n]`` (``weight_ih_l0 (3H×I)``, ``weight_hh_l0 (3H×H)``); RNN one
block (``(H×I)``, ``(H×H)``). Biases other than ``b_hn``: ``to_nn`` writes them to ``bias_ih`` with
``bias_hh = 0``; ``from_nn`` sums ``bias_ih + bias_hh`` (exact: they are only ever added).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .cells import GATES, MODES, NONLINEARITIES
from .naive import NaiveLSTM, from_nn_lstm, to_nn_lstm
from .naive_stack import NaiveStack, count_layers, layer_weights, stack_layers, with_layer_suffix

GRU_GATES = ("z", "r", "h")  # d2l's draw order: update, reset, candidate
GRU_NN_ORDER = ("r", "z", "h")  # nn.GRU's row blocks [r, z, n]; d2l calls n "h"


def _check_sizes(name: str, input_size: int, hidden_size: int) -> None:
    if input_size <= 0 or hidden_size <= 0:
        raise ValueError(f"{name}: input_size and hidden_size must be positive, got {input_size}, {hidden_size}")


class _NaiveRecurrent(nn.Module):
    """Shared calling convention of the single-state layers: nn.GRU / nn.RNN's (time-major)."""

    num_layers = 1
    bidirectional = False

    def _begin(self, inputs: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        name = type(self).__name__
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input must be (T, B, {self.input_size}), got {tuple(inputs.shape)}")
        B = inputs.shape[1]
        if state is None:
            return inputs.new_zeros(B, self.hidden_size)
        if not isinstance(state, torch.Tensor) or tuple(state.shape) != (1, B, self.hidden_size):
            got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise ValueError(f"{name}: state must be a (1, {B}, {self.hidden_size}) tensor, got {got}")
        return state[0]


class NaiveGRU(_NaiveRecurrent):
    """d2l's scratch GRU with PyTorch's reset placement (see the module docstring).

    Input ``(T, B, I)`` float; state ``h (1, B, H)`` or ``None`` for zeros.
    Returns ``(output (T, B, H), h_n (1, B, H))``. ValueError for a wrong input or state shape.
    """

    mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, recurrent_bias: bool = False, device=None, dtype=None):
        super().__init__()
        _check_sizes("NaiveGRU", input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        factory = {"device": device, "dtype": dtype}
        for g in GRU_GATES:
            self.register_parameter(f"W_x{g}", nn.Parameter(torch.randn(input_size, hidden_size, **factory) * 0.01))
            self.register_parameter(f"W_h{g}", nn.Parameter(torch.randn(hidden_size, hidden_size, **factory) * 0.01))
            self.register_parameter(f"b_{g}", nn.Parameter(torch.zeros(hidden_size, **factory)))
        self.b_hn = nn.Parameter(torch.zeros(hidden_size, **factory)) if recurrent_bias else None

    @property
    def recurrent_bias(self) -> bool:
        return self.b_hn is not None

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None):
        H = self._begin(inputs, state)
        p = dict(self.named_parameters())
        outputs = []
        for X in inputs:
            Z = torch.sigmoid(X @ p["W_xz"] + H @ p["W_hz"] + p["b_z"])
            R = torch.sigmoid(X @ p["W_xr"] + H @ p["W_hr"] + p["b_r"])
            HW = H @ p["W_hh"] if self.b_hn is None else H @ p["W_hh"] + self.b_hn
            H_tilde = torch.tanh(X @ p["W_xh"] + p["b_h"] + R * HW)  # d2l: (R * H) @ W_hh
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return torch.stack(outputs), H.unsqueeze(0)


class NaiveRNN(_NaiveRecurrent):
    """d2l's scratch RNN: ``H = φ(X W_xh + H W_hh + b_h)``, φ = ``nonlinearity`` (tanh or relu).

    Input ``(T, B, I)`` float; state ``h (1, B, H)`` or ``None`` for zeros.
    Returns ``(output (T, B, H), h_n (1, B, H))``. ValueError for a wrong shape or nonlinearity.
    """

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", device=None, dtype=None):
        super().__init__()
        _check_sizes("NaiveRNN", input_size, hidden_size)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        self.mode = f"RNN_{nonlinearity.upper()}"  # as nn.RNN.mode
        factory = {"device": device, "dtype": dtype}
        self.W_xh = nn.Parameter(torch.randn(input_size, hidden_size, **factory) * 0.01)
        self.W_hh = nn.Parameter(torch.randn(hidden_size, hidden_size, **factory) * 0.01)
        self.b_h = nn.Parameter(torch.zeros(hidden_size, **factory))

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None):
        H = self._begin(inputs, state)
        phi = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        outputs = []
        for X in inputs:
            H = phi(X @ self.W_xh + H @ self.W_hh + self.b_h)
            outputs.append(H)
        return torch.stack(outputs), H.unsqueeze(0)


# -- conversion ---------------------------------------------------------------------------------


def _nn_parts(state: dict[str, torch.Tensor], gates: int, what: str):
    """Validated ``(w_ih, w_hh, b_ih, b_hh, input_size, H)`` of a layer-0 state dict (missing
    biases read as zeros, as for ``bias=False``)."""
    w_ih, w_hh = state["weight_ih_l0"].detach(), state["weight_hh_l0"].detach()
    rows, input_size = w_ih.shape
    H = rows // gates
    if rows % gates or tuple(w_hh.shape) != (rows, H):
        raise ValueError(f"not a single-layer {what}: weight_ih {tuple(w_ih.shape)}, weight_hh {tuple(w_hh.shape)}")
    zeros = torch.zeros(rows, dtype=w_ih.dtype, device=w_ih.device)
    b_ih = state["bias_ih_l0"].detach() if "bias_ih_l0" in state else zeros
    b_hh = state["bias_hh_l0"].detach() if "bias_hh_l0" in state else zeros
    return w_ih, w_hh, b_ih, b_hh, input_size, H


def _check_target(layer: nn.Module, input_size: int, H: int) -> None:
    if (layer.input_size, layer.hidden_size) != (input_size, H):
        raise ValueError(f"shape mismatch: {type(layer).__name__}({layer.input_size}, {layer.hidden_size}) "
                         f"vs weights for ({input_size}, {H})")


def to_nn_gru(naive: NaiveGRU) -> dict[str, torch.Tensor]:
    """nn.GRU state dict (layer 0) holding exactly the naive layer's weights; ``bias_hh`` is zero
    except its n block, which holds ``b_hn`` (zero without a recurrent bias)."""
    p = {k: v.detach() for k, v in naive.named_parameters()}
    H = naive.hidden_size
    b_hh = torch.zeros(3 * H, dtype=p["b_h"].dtype, device=p["b_h"].device)
    if naive.b_hn is not None:
        b_hh[2 * H:] = p["b_hn"]
    return {
        "weight_ih_l0": torch.cat([p[f"W_x{g}"].T for g in GRU_NN_ORDER]).contiguous(),
        "weight_hh_l0": torch.cat([p[f"W_h{g}"].T for g in GRU_NN_ORDER]).contiguous(),
        "bias_ih_l0": torch.cat([p[f"b_{g}"] for g in GRU_NN_ORDER]).clone(),
        "bias_hh_l0": b_hh,
    }


def from_nn_gru(state: dict[str, torch.Tensor], naive: NaiveGRU | None = None) -> NaiveGRU:
    """Load nn.GRU layer-0 weights into a NaiveGRU (a new one unless given).

    r and z biases are summed; n's input bias becomes ``b_h`` and its recurrent bias ``b_hn``. A new
    layer gets ``recurrent_bias=True`` only when that bias is nonzero; loading a nonzero one into a
    given layer without ``b_hn`` is a ValueError (it cannot be represented, so nothing is dropped).
    """
    w_ih, w_hh, b_ih, b_hh, input_size, H = _nn_parts(state, 3, "GRU")
    b_hn = b_hh[2 * H:]
    if naive is None:
        naive = NaiveGRU(input_size, H, recurrent_bias=bool(b_hn.any()), device=w_ih.device, dtype=w_ih.dtype)
    else:
        _check_target(naive, input_size, H)
        if naive.b_hn is None and bool(b_hn.any()):
            raise ValueError("from_nn_gru: bias_hh_l0's n block is nonzero, and this NaiveGRU has no b_hn "
                             "(build it with recurrent_bias=True)")
    bias = b_ih + torch.cat([b_hh[: 2 * H], torch.zeros_like(b_hn)])  # n's two biases stay apart
    with torch.no_grad():
        for k, g in enumerate(GRU_NN_ORDER):
            rows = slice(k * H, (k + 1) * H)
            getattr(naive, f"W_x{g}").copy_(w_ih[rows].T)
            getattr(naive, f"W_h{g}").copy_(w_hh[rows].T)
            getattr(naive, f"b_{g}").copy_(bias[rows])
        if naive.b_hn is not None:
            naive.b_hn.copy_(b_hn)
    return naive


def to_nn_rnn(naive: NaiveRNN) -> dict[str, torch.Tensor]:
    """nn.RNN state dict (layer 0) holding exactly the naive layer's weights (``bias_hh`` = 0)."""
    return {
        "weight_ih_l0": naive.W_xh.detach().T.contiguous(),
        "weight_hh_l0": naive.W_hh.detach().T.contiguous(),
        "bias_ih_l0": naive.b_h.detach().clone(),
        "bias_hh_l0": torch.zeros_like(naive.b_h.detach()),
    }


def from_nn_rnn(state: dict[str, torch.Tensor], naive: NaiveRNN | None = None,
                nonlinearity: str | None = None) -> NaiveRNN:
    """Load nn.RNN layer-0 weights into a NaiveRNN (a new one unless given). ``nonlinearity``:
    the new layer's (default tanh); for a given layer, None or its own (else ValueError: the
    weights would silently compute another function). The two biases are summed."""
    w_ih, w_hh, b_ih, b_hh, input_size, H = _nn_parts(state, 1, "RNN")
    if naive is None:
        naive = NaiveRNN(input_size, H, nonlinearity or "tanh", device=w_ih.device, dtype=w_ih.dtype)
    else:
        _check_target(naive, input_size, H)
        if nonlinearity not in (None, naive.nonlinearity):
            raise ValueError(f"nonlinearity {nonlinearity!r} does not match the given NaiveRNN's "
                             f"{naive.nonlinearity!r}")
    with torch.no_grad():
        naive.W_xh.copy_(w_ih.T)
        naive.W_hh.copy_(w_hh.T)
        naive.b_h.copy_(b_ih + b_hh)
    return naive


NAIVE_TYPES = (NaiveLSTM, NaiveGRU, NaiveRNN, NaiveStack)


def new_naive(mode: str, input_size: int, hidden_size: int, num_layers: int = 1) -> nn.Module:
    """A freshly initialised naive layer for ``mode`` (d2l's init, drawn from torch's global RNG);
    for ``num_layers > 1`` a :class:`NaiveStack` of them drawn in d2l's deep-RNN order (layer 0,
    then layer 1, ...: :func:`stack_layers`). ValueError for an unknown mode or ``num_layers < 1``."""
    if num_layers != 1:
        return stack_layers(lambda i, h: new_naive(mode, i, h), input_size, hidden_size, num_layers)
    if mode == "lstm":
        return NaiveLSTM(input_size, hidden_size)
    if mode == "gru":
        return NaiveGRU(input_size, hidden_size)
    if mode in ("rnn_tanh", "rnn_relu"):
        return NaiveRNN(input_size, hidden_size, mode[4:])
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def to_nn_weights(layer: nn.Module) -> dict[str, torch.Tensor]:
    """PyTorch weights of any naive layer or stack (exact): ``*_l0`` for a layer, ``*_l0`` ..
    ``*_l{L-1}`` for a :class:`NaiveStack` of ``L`` layers (nn's ``num_layers=L`` names)."""
    if isinstance(layer, NaiveStack):
        return {key: value for k, sub in enumerate(layer.layers)
                for key, value in with_layer_suffix(to_nn_weights(sub), k).items()}
    if isinstance(layer, NaiveLSTM):
        return to_nn_lstm(layer)
    if isinstance(layer, NaiveGRU):
        return to_nn_gru(layer)
    if isinstance(layer, NaiveRNN):
        return to_nn_rnn(layer)
    raise TypeError(f"layer must be one of {', '.join(t.__name__ for t in NAIVE_TYPES)}, got {type(layer).__name__}")


def from_nn_weights(mode: str, state: dict[str, torch.Tensor], naive: nn.Module | None = None) -> nn.Module:
    """A naive layer of ``mode`` holding PyTorch weights ``state`` (loaded into ``naive`` if given):
    a single layer for ``*_l0`` weights, a :class:`NaiveStack` for ``L > 1`` layers.

    ValueError if ``mode`` is unknown, the weights' shapes are not those of a ``mode`` layer (or
    stack), or ``naive`` has another number of layers; a given ``naive`` is left unchanged then.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    num_layers = count_layers(state)
    have = None if naive is None else getattr(naive, "num_layers", 1)
    if have is not None and have != num_layers:
        raise ValueError(f"the weights hold {num_layers} layer(s), the naive {type(naive).__name__} {have}")
    if num_layers > 1 or isinstance(naive, NaiveStack):
        trial = None if naive is None else copy.deepcopy(naive)  # all layers checked before naive changes
        layers = []
        for k in range(num_layers):
            try:
                target = None if trial is None else trial.layers[k]
                layers.append(from_nn_weights(mode, layer_weights(state, k), target))
            except ValueError as exc:  # its names say l0: say which layer
                raise ValueError(f"layer {k} of {num_layers}: {exc}") from None
        if naive is None:
            return NaiveStack(layers)
        naive.load_state_dict(trial.state_dict())
        return naive
    rows, hidden = state["weight_ih_l0"].shape[0], state["weight_hh_l0"].shape[-1]
    if rows != GATES[mode] * hidden:
        raise ValueError(f"weights of {rows // max(hidden, 1)} row blocks do not fit cell mode {mode!r} "
                         f"({GATES[mode]} blocks of {hidden})")
    if mode == "lstm":
        return from_nn_lstm(state, naive)
    if mode == "gru":
        return from_nn_gru(state, naive)
    return from_nn_rnn(state, naive, mode[4:])
