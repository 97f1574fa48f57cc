"""d2l's scratch layers: the seed's LSTM, the GRU and the plain RNN, one Python step per time step.

LSTM (the seed, d2l's "LSTM from scratch"):

Parameters are kept exactly as the seed keeps them: separate ``W_x* (I×H)``, ``W_h* (H×H)`` and
``b_* (H)`` for the gates i (input), f (forget), o (output) and c (candidate, c̃), initialised
``randn * 0.01`` with zero biases. ``forward`` follows nn.LSTM's calling convention (time-major
input, states of shape ``(1, B, H)``) so that a model can swap one for the other.

``to_nn_lstm`` / ``from_nn_lstm`` convert exactly between this layout and nn.LSTM's
(``weight_ih_l0 (4H×I)``, ``weight_hh_l0 (4H×H)`` with gate rows [i, f, g, o], two biases).

The GRU and the plain RNN (d2l's ``gru_scratch`` / ``rnn_scratch``) live in
:mod:`lstm_triton.charlm.naive_cells`, with ``to_nn_weights`` / ``from_nn_weights`` for any of the three.
"""

from __future__ import annotations

import torch
from torch import nn

GATES = ("i", "f", "o", "c")  # the seed's order
NN_ORDER = ("i", "f", "c", "o")  # nn.LSTM's row blocks [i, f, g, o]; the seed calls g "c"


class NaiveLSTM(nn.Module):
    """Single-layer LSTM as in the seed, time loop in Python.

    Input ``(T, B, I)`` float; state ``(h, c)`` each ``(1, B, H)`` (or ``None`` for zeros).
    Returns ``(output (T, B, H), (h_n (1, B, H), c_n (1, B, H)))``.
    """

    num_layers = 1
    bidirectional = False
    mode = "LSTM"  # as nn.LSTM.mode: tells CharLM the state is a (h, c) pair

    def __init__(self, input_size: int, hidden_size: int, device=None, dtype=None):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size, self.hidden_size = input_size, hidden_size
        factory = {"device": device, "dtype": dtype}
        for g in GATES:
            self.register_parameter(f"W_x{g}", nn.Parameter(torch.randn(input_size, hidden_size, **factory) * 0.01))
            self.register_parameter(f"W_h{g}", nn.Parameter(torch.randn(hidden_size, hidden_size, **factory) * 0.01))
            self.register_parameter(f"b_{g}", nn.Parameter(torch.zeros(hidden_size, **factory)))

    def forward(self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"NaiveLSTM: input must be (T, B, {self.input_size}), got {tuple(inputs.shape)}"
            )
        B = inputs.shape[1]
        if state is None:
            zeros = inputs.new_zeros(B, self.hidden_size)
            H, C = zeros, zeros
        else:
            H, C = state[0][0], state[1][0]
        p = dict(self.named_parameters())
        outputs = []
        for X in inputs:
            I = torch.sigmoid(X @ p["W_xi"] + H @ p["W_hi"] + p["b_i"])
            F = torch.sigmoid(X @ p["W_xf"] + H @ p["W_hf"] + p["b_f"])
            O = torch.sigmoid(X @ p["W_xo"] + H @ p["W_ho"] + p["b_o"])
            C_tilde = torch.tanh(X @ p["W_xc"] + H @ p["W_hc"] + p["b_c"])
            C = F * C + I * C_tilde
            H = O * torch.tanh(C)
            outputs.append(H)
        return torch.stack(outputs), (H.unsqueeze(0), C.unsqueeze(0))


def to_nn_lstm(naive: NaiveLSTM) -> dict[str, torch.Tensor]:
    """nn.LSTM state dict (layer 0) holding exactly the naive layer's weights (``bias_hh`` = 0)."""
    p = {k: v.detach() for k, v in naive.named_parameters()}
    return {
        "weight_ih_l0": torch.cat([p[f"W_x{g}"].T for g in NN_ORDER]).contiguous(),
        "weight_hh_l0": torch.cat([p[f"W_h{g}"].T for g in NN_ORDER]).contiguous(),
        "bias_ih_l0": torch.cat([p[f"b_{g}"] for g in NN_ORDER]).clone(),
        "bias_hh_l0": torch.zeros_like(torch.cat([p[f"b_{g}"] for g in NN_ORDER])),
    }


def from_nn_lstm(state: dict[str, torch.Tensor], naive: NaiveLSTM | None = None) -> NaiveLSTM:
    """Load nn.LSTM layer-0 weights into a NaiveLSTM (new one unless given); the biases are summed."""
    w_ih, w_hh = state["weight_ih_l0"].detach(), state["weight_hh_l0"].detach()
    four_h, input_size = w_ih.shape
    H = four_h // 4
    if w_hh.shape != (four_h, H) or four_h % 4:
        raise ValueError(f"not a single-layer LSTM: weight_ih {tuple(w_ih.shape)}, weight_hh {tuple(w_hh.shape)}")
    bias = torch.zeros(four_h, dtype=w_ih.dtype, device=w_ih.device)
    for key in ("bias_ih_l0", "bias_hh_l0"):
        if key in state:
            bias = bias + state[key].detach()
    if naive is None:
        naive = NaiveLSTM(input_size, H, device=w_ih.device, dtype=w_ih.dtype)
    elif (naive.input_size, naive.hidden_size) != (input_size, H):
        raise ValueError(
            f"shape mismatch: NaiveLSTM({naive.input_size}, {naive.hidden_size}) "
            f"vs weights for ({input_size}, {H})"
        )
    with torch.no_grad():
        for k, g in enumerate(NN_ORDER):
            rows = slice(k * H, (k + 1) * H)
            getattr(naive, f"W_x{g}").copy_(w_ih[rows].T)
            getattr(naive, f"W_h{g}").copy_(w_hh[rows].T)
            getattr(naive, f"b_{g}").copy_(bias[rows])
    return naive
