"""``lstm-triton`` command line: ``train`` the char LM (more subcommands join as they land).

Bad input exits with status 2 and one line on stderr, never a traceback, and touches no file.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from pathlib import Path

from .. import __version__
from .cells import CELLS, DEFAULT_HIDDEN, NONLINEARITIES
from .checkpoint import CheckpointError, atomic_write
from .compiled import COMPILE_BACKENDS
from .data import CorpusError
from .impls import IMPLS, INITS
from .precision import DTYPES
from .train import TrainConfig, Trainer

PREFIXES = ("time traveller", "traveller")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: error: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lstm-triton", description="Fused Triton LSTM: train a char LM on The Time Machine.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train the d2l char language model (LSTM, GRU or RNN)")
    t.add_argument("--impl", choices=IMPLS, default="nn",
                   help="implementation: d2l's scratch loop, torch.nn, or the Triton kernels (default: nn)")
    t.add_argument("--cell", choices=CELLS, default="lstm", help="recurrent cell (default: lstm)")
    t.add_argument("--nonlinearity", choices=NONLINEARITIES, default=None,
                   help="for --cell rnn only: tanh (default, d2l's) or relu")
    t.add_argument("--fusion", choices=("auto", "cell", "step", "persistent"), default=None,
                   help="fusion level for --impl triton (default: auto)")
    t.add_argument("--epochs", type=_positive_int, default=500)
    t.add_argument("--lr", type=_positive_float, default=1.0)
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--num-steps", type=_positive_int, default=35)
    t.add_argument("--hidden-size", type=_positive_int, default=None,
                   help="hidden units (default: d2l's for the cell: "
                        + ", ".join(f"{n} for {c}" for c, n in DEFAULT_HIDDEN.items()) + ")")
    t.add_argument("--num-layers", type=_positive_int, default=1,
                   help="stacked recurrent layers (default 1; d2l's deep RNN: --num-layers 2 --lr 2)")
    t.add_argument("--max-tokens", type=_positive_int, default=10_000, help="training window (default 10000)")
    t.add_argument("--val-tokens", type=_non_negative_int, default=5_000,
                   help="validation tokens taken after the training window (default 5000; 0 = none)")
    t.add_argument("--random-iter", action="store_true", help="d2l's random iterator instead of sequential")
    t.add_argument("--clip", type=_positive_float, default=1.0, help="gradient-norm clipping threshold")
    t.add_argument("--init", choices=INITS, default="seed", help="initial weights: the seed's or torch's")
    t.add_argument("--eval-every", type=_positive_int, default=1, help="validate every N epochs (and at the end)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    t.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                   help="autocast precision of the forward and loss (weights stay fp32; fp16 scales the loss)")
    t.add_argument("--compile", action="store_true", help="train through torch.compile")
    t.add_argument("--compile-backend", choices=COMPILE_BACKENDS, default=None,
                   help="torch.compile backend for --compile (default: inductor)")
    t.add_argument("--corpus", default=None, help="UTF-8 text file to train on (default: The Time Machine)")
    t.add_argument("--save", default=None, help="checkpoint written atomically after every epoch")
    t.add_argument("--resume", default=None, help="checkpoint to continue from (also saved to, unless --save)")
    t.add_argument("--metrics-csv", default=None, help="write per-epoch metrics to this CSV file")
    t.add_argument("--num-preds", type=_non_negative_int, default=50, help="characters to predict per prefix")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    k = sub.add_parser("kernels", help="compile every kernel configuration for a GPU and report registers/spills")
    k.add_argument("--arch", default="sm_90", choices=("sm_80", "sm_90"))
    k.add_argument("--json", action="store_true")
    k.add_argument("--sass", action="store_true",
                   help="disassemble every build to count its SASS MMAs (default: the d2l/large rows)")
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.nonlinearity is not None and args.cell != "rnn":
        raise UsageError(f"lstm-triton train: error: argument --nonlinearity: applies to --cell rnn only, "
                         f"not --cell {args.cell}")
    if args.fusion is not None and args.impl != "triton":
        raise UsageError(f"lstm-triton train: error: argument --fusion: applies to --impl triton only, "
                         f"not --impl {args.impl}")
    if args.compile_backend is not None and not args.compile:
        raise UsageError("lstm-triton train: error: argument --compile-backend: applies with --compile only")
    return TrainConfig(
        impl=args.impl, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, num_steps=args.num_steps,
        hidden_size=args.hidden_size, max_tokens=args.max_tokens, val_tokens=args.val_tokens,
        use_random_iter=args.random_iter, clip=args.clip, seed=args.seed, init=args.init,
        fusion=args.fusion or "auto", eval_every=args.eval_every, corpus=args.corpus,
        cell=args.cell, nonlinearity=args.nonlinearity or "tanh",
        num_layers=args.num_layers, dtype=args.dtype, compile=args.compile,
        compile_backend=args.compile_backend or "inductor",
    )


def _check_output_path(flag: str, path: str | None) -> None:
    """Fail before training, not after the first epoch, when ``path`` cannot be written."""
    if not path:
        return
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"lstm-triton train: error: argument {flag}: {path} is a directory, expected a file path")
    if not parent.is_dir():
        raise UsageError(f"lstm-triton train: error: argument {flag}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"lstm-triton train: error: argument {flag}: directory {parent} is not writable")


def run_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .model import predict

    cfg = _config(args)
    _check_output_path("--save", args.save)  # a --resume file is checked when it is read
    _check_output_path("--metrics-csv", args.metrics_csv)
    try:
        trainer = Trainer(cfg, args.device)
        if args.resume:
            trainer.resume(args.resume)
    except (ValueError, CorpusError, CheckpointError, NotImplementedError) as exc:
        raise UsageError(f"lstm-triton train: error: {exc}") from None

    save_path = args.save or args.resume
    bar = tqdm(total=trainer.cfg.epochs, initial=trainer.epoch, unit="epoch", disable=args.no_progress,
               desc=f"train {cfg.cell} {args.impl}", dynamic_ncols=True)

    def after_epoch(tr: Trainer, row: dict) -> None:
        if save_path:
            tr.save(save_path)
        bar.set_postfix(ppl=f"{row['train_perplexity']:.2f}", val=f"{row['val_perplexity']:.2f}",
                        tok_s=f"{row['tokens_per_sec']:.0f}")
        bar.update(1)

    try:
        metrics = trainer.fit(after_epoch)
    except KeyboardInterrupt:
        bar.close()
        where = f"; last checkpoint: {save_path} (epoch {trainer.epoch})" if save_path else ""
        print(f"interrupted after epoch {trainer.epoch}{where}", file=sys.stderr)
        return 130
    bar.close()

    for prefix in PREFIXES:
        with trainer.autocast():
            print(predict(trainer.model, prefix, args.num_preds, trainer.data.vocab, trainer.device))
    if args.metrics_csv:
        buffer = io.StringIO()
        metrics.to_csv(buffer, index=False)
        atomic_write(args.metrics_csv, lambda f: f.write(buffer.getvalue().encode()))
    if len(metrics):
        last = metrics.iloc[-1]
        val = f", validation perplexity {last['val_perplexity']:.2f}" if not math.isnan(last["val_perplexity"]) else ""
        print(f"perplexity {last['train_perplexity']:.1f}, {metrics['tokens_per_sec'].median():.1f} tokens/sec "
              f"on {trainer.device}{val}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return run_train(args)
        if args.command == "kernels":
            from ..layers.kernel_report import main as report

            return report(["--arch", args.arch] + (["--json"] if args.json else []) + (["--sass"] if args.sass else []))
        raise UsageError(f"lstm-triton: error: unknown command {args.command!r}")
    except UsageError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
