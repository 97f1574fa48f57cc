"""d2l's training loop for the char LM (train_ch8), with validation, checkpoints and metrics.

Any cell trains: ``lstm`` (default), ``gru`` or ``rnn`` (``nonlinearity`` tanh or relu), each with
d2l's chapter settings (lr 1, 500 epochs, batch 32, 35 steps; 256 hidden units for LSTM and GRU,
512 for the RNN, used whenever ``hidden_size`` is not given).

SGD with learning rate ``lr``, global-norm gradient clipping at ``clip`` (d2l's grad_clipping),
loss = mean cross-entropy, perplexity = exp(mean loss over the epoch). With the sequential
iterator the state is carried across batches (and detached); with the random iterator it is
re-initialised every batch. tokens/s counts training tokens over training time only, with the
device synchronised before each clock read.

Under torchrun (:mod:`lstm_triton.charlm.distributed`) each rank trains its share of every batch's
rows through DistributedDataParallel; losses, token counts and tokens/s are summed over the ranks,
so a run on W processes reports what one process reports for the same global ``batch_size``.

``num_layers`` stacks recurrent layers (d2l §9.3, deep RNNs: d2l trains 2 layers at lr 2).
``dtype`` bf16 / fp16 trains under autocast (``precision.py``; weights stay fp32), and so evaluates;
``compile`` runs the training forward through ``torch.compile`` (``compile_backend``), while the
eager module, which shares its parameters, is the one evaluated, saved and resumed, so checkpoints
are the same with or without it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..kernels.launch_config import interpreter_on
from . import distributed
from .cells import CELLS, DEFAULT_HIDDEN, cell_mode
from .checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from .compiled import check_backend, compile_for_training
from .data import CharData
from .impls import IMPLS, INITS, build_char_lm, load_portable_state_dict, portable_state_dict
from .model import CharLM, detach_state
from .precision import autocast, check_autocast_runs, check_dtype, grad_scaler

METRIC_COLUMNS = [
    "epoch", "train_loss", "train_perplexity", "val_perplexity", "tokens", "seconds", "tokens_per_sec",
]


@dataclass
class TrainConfig:
    """Everything that defines a training run; d2l's LSTM chapter values by default.

    ``hidden_size=None`` (the default) becomes the cell's d2l value on construction: 256 for lstm
    and gru, 512 for rnn. ``nonlinearity`` applies to ``cell="rnn"`` only. ``num_layers`` (1):
    stacked recurrent layers; ``dtype`` (``fp32``, ``bf16``, ``fp16``): the autocast precision;
    ``compile`` / ``compile_backend``: train through ``torch.compile`` with that backend.
    """

    impl: str = "nn"
    epochs: int = 500
    lr: float = 1.0
    batch_size: int = 32
    num_steps: int = 35
    hidden_size: int | None = None
    max_tokens: int = 10_000
    val_tokens: int = 5_000
    use_random_iter: bool = False
    clip: float = 1.0
    seed: int = 0
    init: str = "seed"
    fusion: str = "auto"
    eval_every: int = 1
    corpus: str | None = None
    cell: str = "lstm"
    nonlinearity: str = "tanh"
    num_layers: int = 1
    dtype: str = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.hidden_size is None and self.cell in CELLS:
            self.hidden_size = DEFAULT_HIDDEN[self.cell]

    @property
    def mode(self) -> str:
        """The cell as one name: lstm, gru, rnn_tanh or rnn_relu (ValueError if invalid)."""
        return cell_mode(self.cell, self.nonlinearity)

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the first bad field."""
        cell_mode(self.cell, self.nonlinearity)  # ValueError naming cell or nonlinearity
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        for name in ("epochs", "batch_size", "num_steps", "hidden_size", "max_tokens", "eval_every", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.val_tokens < 0:
            raise ValueError(f"val_tokens must be >= 0, got {self.val_tokens}")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        check_dtype(self.dtype)
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        check_backend(self.compile_backend)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ValueError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but torch sees no CUDA GPU")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clip_gradients(model: nn.Module, theta: float) -> torch.Tensor:
    """d2l's grad_clipping: scale all gradients so their global L2 norm is at most ``theta``.

    Returns the norm before clipping as a 0-d tensor on the gradients' device. Nothing is read on
    the host: d2l's ``if norm > theta: g *= theta / norm`` becomes a multiply by
    ``min(1, theta / norm)`` on the device (bit-identical: when norm ≤ theta the factor is exactly
    1), so on a GPU the CPU keeps queueing kernels instead of waiting for each batch's norm.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.sqrt(sum(torch.sum(g * g) for g in grads))
    scale = torch.clamp(theta / norm, max=1.0)  # norm = 0 gives inf -> 1
    torch._foreach_mul_(grads, scale)
    return norm


class Trainer:
    """Owns the model, optimiser, data and RNG of one run; ``fit`` trains epoch by epoch."""

    def __init__(self, cfg: TrainConfig, device: str | torch.device = "auto", data: CharData | None = None):
        cfg.validate()
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        distributed.check_batch_split(cfg.batch_size, self.world_size)
        self.cfg = cfg
        self.device = resolve_device(device)
        if cfg.impl == "triton" and self.device.type != "cuda" and not interpreter_on():
            raise ValueError(f"impl 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to interpret the kernels "
                             f"on the CPU, slowly); the device here is {self.device}")
        self.data = data or CharData.load(
            cfg.batch_size, cfg.num_steps, cfg.max_tokens, cfg.val_tokens, cfg.use_random_iter, cfg.corpus
        )
        self.model: CharLM = build_char_lm(
            cfg.impl, len(self.data.vocab), cfg.hidden_size,
            seed=cfg.seed, init=cfg.init, fusion=cfg.fusion, device=self.device,
            cell=cfg.cell, nonlinearity=cfg.nonlinearity, num_layers=cfg.num_layers,
        )
        check_autocast_runs(self.model, self.device, cfg.dtype, f"impl {cfg.impl!r} cell {cfg.cell!r}")
        self.train_model = distributed.wrap(self.model, self.device)  # DDP under torchrun, else self.model
        # the training forward (compiled around DDP, as torch.compile expects it); self.model (same
        # parameters) is what is evaluated and saved
        self.forward = (compile_for_training(self.train_model, cfg.compile_backend, self.device) if cfg.compile
                        else self.train_model)
        self.scaler = grad_scaler(self.device, cfg.dtype)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.loss_fn = nn.CrossEntropyLoss()
        self.rng = random.Random(cfg.seed)  # data order: offsets and shuffles
        torch.manual_seed(cfg.seed)
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []

    def autocast(self):
        """The precision context of this run's forward passes (``cfg.dtype``; a no-op for fp32)."""
        return autocast(self.device, self.cfg.dtype)

    # -- one epoch -------------------------------------------------------------------------------
    def train_epoch(self) -> dict:
        model, device = self.model, self.device
        model.train()
        state = None
        loss_sum, tokens = 0.0, 0
        synchronize(device)
        start = time.perf_counter()
        for X, Y in distributed.shard_rows(self.data.train_batches(self.rng), self.rank, self.world_size):
            X, y = X.to(device), Y.T.reshape(-1).to(device)
            if state is None or self.cfg.use_random_iter:
                state = model.begin_state(X.shape[0], device)
            else:
                state = detach_state(state)
            with self.autocast():
                logits, state = self.forward(X, state)
                loss = self.loss_fn(logits, y)  # under DDP: the mean over this rank's rows
            self.optimizer.zero_grad(set_to_none=True)
            # The scaler is a pass-through unless fp16: there the loss is scaled, the gradients are
            # unscaled before clipping, and a step with inf/NaN gradients is skipped (one host read).
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            # Under DDP the backward has all-reduced the gradients into the global mean's, the same
            # on every rank, so this local norm is the global norm (tests/test_ddp.py checks both).
            clip_gradients(model, self.cfg.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach() * y.numel()  # stays on the device: read once per epoch
            tokens += y.numel()
        synchronize(device)
        seconds = time.perf_counter() - start
        loss_sum, tokens = distributed.sum_over_ranks(loss_sum, tokens)  # unchanged in a one-process run
        (seconds,) = distributed.max_over_ranks(seconds)  # the epoch lasts as long as its slowest rank
        mean_loss = float(loss_sum) / tokens
        return {
            "train_loss": mean_loss, "train_perplexity": math.exp(mean_loss),
            "tokens": tokens, "seconds": seconds, "tokens_per_sec": tokens / seconds,
        }

    @torch.no_grad()
    def evaluate(self) -> float:
        """Perplexity on the validation stream (sequential, state carried); NaN if there is none."""
        if not self.data.has_validation:
            return math.nan
        model = self.model
        model.eval()
        state, loss_sum, tokens = None, 0.0, 0
        for X, Y in distributed.shard_rows(self.data.val_batches(), self.rank, self.world_size):
            X, y = X.to(self.device), Y.T.reshape(-1).to(self.device)
            with self.autocast():
                logits, state = model(X, state if state is not None else model.begin_state(X.shape[0], self.device))
                loss = self.loss_fn(logits, y)
            loss_sum += loss.double() * y.numel()  # on the device: one read at the end
            tokens += y.numel()
        model.train()
        loss_sum, tokens = distributed.sum_over_ranks(loss_sum, tokens)
        return math.exp(float(loss_sum) / tokens)

    # -- the run -------------------------------------------------------------------------------
    def fit(self, on_epoch_end: Callable[[Trainer, dict], None] | None = None) -> pd.DataFrame:
        """Train until ``cfg.epochs`` epochs are done (continuing after a resume)."""
        while self.epoch < self.cfg.epochs:
            row = {"epoch": self.epoch + 1, **self.train_epoch()}
            last = self.epoch + 1 == self.cfg.epochs
            row["val_perplexity"] = self.evaluate() if (row["epoch"] % self.cfg.eval_every == 0 or last) else math.nan
            self.epoch += 1
            self.history.append(row)
            if on_epoch_end is not None:
                on_epoch_end(self, row)
        return self.metrics()

    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.history, columns=METRIC_COLUMNS)

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {
            "config": dataclasses.asdict(self.cfg),
            "vocab": self.data.vocab.idx_to_token,
            "model": portable_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "data_rng": self.rng.getstate(),
            "torch_rng": torch.random.get_rng_state(),
            "grad_scaler": self.scaler.state_dict(),  # {} unless fp16: its loss scale and step count
        })

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save`; CheckpointError if it does not fit this run
        (another cell, vocabulary or shape). Nothing is loaded when it is refused."""
        payload = load_checkpoint(path)
        saved = payload["config"]
        try:  # checkpoints written before GRU/RNN have no cell: they are LSTMs
            saved_mode = cell_mode(saved.get("cell", "lstm"), saved.get("nonlinearity", "tanh"))
        except ValueError as exc:
            raise CheckpointError(f"resume: {path} records an unknown cell ({exc})") from None
        if saved_mode != self.cfg.mode:
            raise CheckpointError(f"resume: {path} holds a {_cell_words(saved_mode)} model, this run trains "
                                  f"{_cell_words(self.cfg.mode)} (check --cell and --nonlinearity)")
        saved_layers = saved.get("num_layers", 1)  # checkpoints from before num_layers: one layer
        if saved_layers != self.cfg.num_layers:
            raise CheckpointError(f"resume: {path} holds a {saved_layers}-layer model, this run trains "
                                  f"{self.cfg.num_layers} (check --num-layers)")
        if payload["vocab"] != self.data.vocab.idx_to_token:
            raise CheckpointError(f"resume: {path} was trained on a corpus with a different vocabulary")
        check_compatible(portable_state_dict(self.model), payload["model"], str(path))
        try:
            load_portable_state_dict(self.model, payload["model"])
        except ValueError as exc:  # e.g. a GRU recurrent bias this naive layer cannot hold
            raise CheckpointError(f"resume: {path}: {exc}") from None
        if payload["config"]["impl"] == self.cfg.impl:  # parameter lists differ between impls
            self.optimizer.load_state_dict(payload["optimizer"])
        for group in self.optimizer.param_groups:  # the lr asked for now wins over the saved one
            group["lr"] = self.cfg.lr
        self.epoch = payload["epoch"]
        self.history = list(payload["history"])
        if self.scaler.is_enabled() and payload.get("grad_scaler"):
            self.scaler.load_state_dict(payload["grad_scaler"])
        self.rng.setstate(payload["data_rng"])
        torch.random.set_rng_state(payload["torch_rng"])


def _cell_words(mode: str) -> str:
    """``rnn_relu`` -> ``'rnn' (relu)``, ``gru`` -> ``'gru'``: how a user names the cell."""
    cell, _, nonlinearity = mode.partition("_")
    return f"'{cell}' ({nonlinearity})" if nonlinearity else f"'{cell}'"


def train(cfg: TrainConfig, device: str | torch.device = "auto") -> tuple[Trainer, pd.DataFrame]:
    """Train from scratch with ``cfg``; returns the trainer (model, data) and per-epoch metrics."""
    trainer = Trainer(cfg, device)
    return trainer, trainer.fit()
