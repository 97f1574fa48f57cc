"""The one place that turns an implementation name into a recurrent layer for the char LM.

``naive``  the seed's per-timestep loop (lstm_triton.naive.NaiveLSTM)
``nn``     torch.nn.LSTM (cuDNN on GPU, ATen on CPU)
``triton`` lstm_triton.LSTM with our fused Triton kernels (``fusion`` picks the level)

Every implementation starts from the same weights for the same seed: the canonical weights are
drawn once in the seed's layout (``randn * 0.01``, zero biases) and converted exactly, so that
perplexity curves are comparable. ``init="torch"`` uses nn.LSTM/nn.Linear default init instead.

With the seed's init the *model* is the seed's too: one bias per gate. nn.LSTM's layout has two
(``bias_ih + bias_hh``); SGD on both moves their sum twice as fast as SGD on one bias, and the
gradient-norm clipping counts that gradient twice, so the nn-layout layers train ``bias_ih`` only
and keep ``bias_hh`` frozen at zero. Then every implementation follows the same trajectory, not
just the same first forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import CharLM
from .naive import NaiveLSTM, from_nn_lstm, to_nn_lstm

IMPLS = ("naive", "nn", "triton")
INITS = ("seed", "torch")


def _nn_layer_weights(vocab_size: int, hidden_size: int, init: str) -> dict[str, torch.Tensor]:
    if init == "seed":
        return to_nn_lstm(NaiveLSTM(vocab_size, hidden_size))
    return {k: v.detach() for k, v in nn.LSTM(vocab_size, hidden_size).state_dict().items()}


def layer_from_weights(impl: str, weights: dict[str, torch.Tensor], fusion: str = "auto") -> nn.Module:
    """A single-layer LSTM of ``impl`` holding exactly ``weights`` (nn.LSTM layer-0 names, on the CPU)."""
    four_h, input_size = weights["weight_ih_l0"].shape
    if impl == "naive":
        return from_nn_lstm(weights)
    if impl == "nn":
        layer = nn.LSTM(input_size, four_h // 4)
    else:
        from .lstm import LSTM

        layer = LSTM(input_size, four_h // 4, fusion=fusion, backend="triton")  # never a silent torch fallback
    layer.load_state_dict(weights)
    return layer


def build_char_lm(
    impl: str,
    vocab_size: int,
    hidden_size: int = 256,
    *,
    seed: int = 0,
    init: str = "seed",
    fusion: str = "auto",
    device: torch.device | str = "cpu",
) -> CharLM:
    """A CharLM whose weights depend only on ``(vocab_size, hidden_size, seed, init)``, never on ``impl``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if vocab_size <= 0 or hidden_size <= 0:
        raise ValueError(f"vocab_size and hidden_size must be positive, got {vocab_size}, {hidden_size}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        weights = _nn_layer_weights(vocab_size, hidden_size, init)
        head = nn.Linear(hidden_size, vocab_size)
        if init == "seed":  # the seed's W_hq = randn * 0.01, b_q = 0
            with torch.no_grad():
                head.weight.copy_(torch.randn(hidden_size, vocab_size).T * 0.01)
                head.bias.zero_()
    finally:
        torch.random.set_rng_state(gen_state)

    layer = layer_from_weights(impl, weights, fusion)
    if init == "seed" and impl != "naive":
        for name, param in layer.named_parameters():
            if name.startswith("bias_hh"):
                param.requires_grad_(False)  # the seed's single bias lives in bias_ih
    model = CharLM(layer, vocab_size)
    model.linear.load_state_dict(head.state_dict())
    return model.to(device)


def portable_state_dict(model: CharLM) -> dict[str, torch.Tensor]:
    """The model's weights in nn.LSTM's layout whatever the implementation (checkpoints move freely)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("rnn.")}
    if isinstance(model.rnn, NaiveLSTM):
        layer = to_nn_lstm(model.rnn)
    else:
        layer = {k: v.detach().clone() for k, v in model.rnn.state_dict().items()}
    state.update({f"rnn.{k}": v for k, v in layer.items()})
    return state


def load_portable_state_dict(model: CharLM, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`portable_state_dict`."""
    head = {k[len("linear."):]: v for k, v in state.items() if k.startswith("linear.")}
    layer = {k[len("rnn."):]: v for k, v in state.items() if k.startswith("rnn.")}
    model.linear.load_state_dict(head)
    if isinstance(model.rnn, NaiveLSTM):
        from_nn_lstm(layer, model.rnn)
    else:
        model.rnn.load_state_dict(layer)
