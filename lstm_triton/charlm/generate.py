"""Text from a trained char LM: greedy (d2l's predict_ch8) or sampled, from a model or a checkpoint.

:func:`sample` continues a prefix the way d2l's ``predict_ch8`` does (d2l 8.5.4 "Prediction", 9.2
for the LSTM): the state starts at zero, the prefix is read (warm-up), and every later character
is chosen from the logits of the one before. At temperature 0 the choice is the argmax, exactly
``predict_ch8``; above 0 it is drawn from ``softmax(logits / temperature)``, optionally restricted
to the ``top_k`` most likely characters, with ``torch.multinomial`` and a ``torch.Generator`` so a
seed reproduces the text (on the same device and build).

:func:`load_for_generation` rebuilds the model a checkpoint of :meth:`Trainer.save` holds, on any
implementation: the saved weights are in PyTorch's layout whatever implementation trained them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..kernels.launch_config import interpreter_on
from .cells import cell_mode
from .checkpoint import CheckpointError, load_checkpoint
from .data import Vocab
from .impls import IMPLS, build_char_lm, load_portable_state_dict
from .model import CharLM, State
from .precision import DTYPES, autocast


def warm_up(model: CharLM, ids: list[int], device: torch.device | str) -> State:
    """The state after reading all but the last of ``ids`` from a zero state (d2l's warm-up).

    ``ids``: a non-empty list of token indices. Returns ``(h, c)`` (LSTM) or ``h`` (GRU, RNN), each
    ``(L*D, 1, H)``. The last id is left for the first prediction step to read.
    """
    state = model.begin_state(1, device)
    if len(ids) > 1:  # one call over the whole prefix (but its last character)
        _, state = model(torch.tensor([ids[:-1]], device=device), state)
    return state


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> int:
    """One character index from ``logits (V,)``: the argmax at ``temperature`` 0, else a draw from
    ``softmax(logits / temperature)`` over the ``top_k`` largest logits (all when ``None``).

    ``generator`` must live on the logits' device (torch.multinomial's rule); ``None`` draws from
    torch's global RNG. ValueError for a negative or non-finite temperature or a ``top_k`` < 1.
    """
    check_sampling(temperature, top_k)
    if temperature == 0:
        return int(logits.argmax())
    # Subtract the maximum before dividing: a tiny temperature then sends the others to -inf,
    # never the maximum to +inf (inf - inf would make softmax NaN).
    scaled = (logits.float() - logits.max().float()) / temperature
    if top_k is not None and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def check_sampling(temperature: float, top_k: int | None) -> None:
    """ValueError (one line, naming the argument) for a temperature that is negative or not finite,
    or a ``top_k`` that is not a positive integer."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (or None for all), got {top_k!r}")


@torch.no_grad()
def sample(model: CharLM, prefix: str, num_chars: int, vocab: Vocab, device: torch.device | str = "cpu", *,
           temperature: float = 0.0, top_k: int | None = None, generator: torch.Generator | None = None) -> str:
    """``prefix`` followed by ``num_chars`` generated characters (d2l's predict_ch8 when greedy).

    ``model``: a CharLM on ``device``, ``vocab`` the one it was trained with. Characters of
    ``prefix`` outside the vocabulary read as ``<unk>`` (d2l's ``vocab[...]``; see
    :func:`unknown_characters` to refuse them instead). ``temperature`` 0 (default) is greedy and
    ignores ``generator``; see :func:`next_token`. The model is left in the train/eval mode it had.

    ValueError for an empty prefix, a negative ``num_chars``, or a bad temperature or ``top_k``.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("prefix must be a non-empty string")
    if not isinstance(num_chars, int) or num_chars < 0:
        raise ValueError(f"num_chars must be an integer >= 0, got {num_chars!r}")
    check_sampling(temperature, top_k)
    was_training = model.training
    model.eval()
    try:
        out = vocab.encode(prefix)
        state = warm_up(model, out, device)
        for _ in range(num_chars):
            logits, state = model(torch.tensor([[out[-1]]], device=device), state)
            out.append(next_token(logits[0], temperature, top_k, generator))
        return vocab.decode(out)
    finally:
        model.train(was_training)


def unknown_characters(text: str, vocab: Vocab) -> list[str]:
    """The distinct characters of ``text`` that ``vocab`` has no token for, in order of appearance."""
    return list(dict.fromkeys(ch for ch in text if ch not in vocab.token_to_idx))


@dataclass
class LoadedModel:
    """A checkpoint's model ready to generate: ``model`` (eval mode, on the requested device), its
    ``vocab``, the saved ``config`` (TrainConfig as a dict), the implementation it runs on, and
    ``note``: why that differs from the checkpoint's (None when it does not)."""

    model: CharLM
    vocab: Vocab
    config: dict
    impl: str
    note: str | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast the run trained and predicted under (``config['dtype']``; none for fp32)."""
        return autocast(next(self.model.parameters()).device, self.config.get("dtype", "fp32"))


def load_for_generation(path: str | Path, device: torch.device | str = "cpu", impl: str | None = None) -> LoadedModel:
    """Rebuild the CharLM of a checkpoint written by :meth:`Trainer.save` (any cell, any impl).

    ``impl`` (naive, nn, triton) overrides the checkpoint's implementation; ``None`` keeps it, except
    a ``triton`` checkpoint on a CPU without ``TRITON_INTERPRET=1``, which cannot run the kernels: it
    runs on ``nn`` (the same math on the same weights) and ``note`` says so.

    CheckpointError (one line, starting ``checkpoint:``) for a missing or unreadable file, a file
    that is not an lstm-triton checkpoint, or one whose config, vocabulary or weights do not fit
    together; ValueError for an unknown ``impl``, or ``impl="triton"`` on a CPU without the interpreter.
    """
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    device = torch.device(device)
    payload = load_checkpoint(path, purpose="checkpoint")
    config, saved_vocab = payload.get("config"), payload.get("vocab")
    if not isinstance(config, dict) or not isinstance(saved_vocab, list) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"checkpoint: {path} lacks its config, vocabulary or weights")
    vocab = Vocab([tok for tok in saved_vocab[1:] if isinstance(tok, str)])
    # Vocab orders tokens by frequency, ties first-seen: all counts 1 keep the saved order exactly.
    if vocab.idx_to_token != saved_vocab:
        raise CheckpointError(f"checkpoint: {path} records a malformed vocabulary")
    try:  # checkpoints written before GRU/RNN have no cell: they are LSTMs
        cell_mode(config.get("cell", "lstm"), config.get("nonlinearity", "tanh"))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint: {path} records an unknown cell ({exc})") from None
    if config.get("dtype", "fp32") not in DTYPES:
        raise CheckpointError(f"checkpoint: {path} records an unknown dtype {config.get('dtype')!r}")

    saved_impl, note = config.get("impl"), None
    if impl is None:
        impl = saved_impl
        if impl == "triton" and device.type != "cuda" and not interpreter_on():
            impl = "nn"
            note = (f"the checkpoint's impl 'triton' needs a CUDA device (or TRITON_INTERPRET=1); "
                    f"generating with impl 'nn' on {device}: the same math on the same weights")
    elif impl == "triton" and device.type != "cuda" and not interpreter_on():
        raise ValueError(f"impl 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to interpret the kernels "
                         f"on the CPU, slowly); the device here is {device}")
    if impl not in IMPLS:
        raise CheckpointError(f"checkpoint: {path} records an unknown impl {saved_impl!r}")

    try:  # checkpoints written before --num-layers are single-layer
        model = build_char_lm(impl, len(vocab), config.get("hidden_size"), fusion=config.get("fusion", "auto"),
                              cell=config.get("cell", "lstm"), nonlinearity=config.get("nonlinearity", "tanh"),
                              num_layers=config.get("num_layers", 1))
        load_portable_state_dict(model, payload["model"])
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint: {path}: its weights do not fit its config ({detail})") from None
    return LoadedModel(model.to(device).eval(), vocab, config, impl, note)
