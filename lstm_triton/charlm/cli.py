"""``lstm-triton`` command line: ``train`` the char LM, ``generate`` text from its checkpoint.

Bad input exits with status 2 and one line on stderr, never a traceback, and touches no file.
Under torchrun (``torchrun --nproc-per-node N -m lstm_triton train ...``) the run is data-parallel
(:mod:`lstm_triton.charlm.distributed`) and rank 0 alone writes files, shows the bar and prints.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import os
import sys
from pathlib import Path

import torch

from .. import __version__
from . import distributed
from .cells import CELLS, DEFAULT_HIDDEN, NONLINEARITIES
from .checkpoint import CheckpointError, atomic_write
from .compiled import COMPILE_BACKENDS
from .data import CorpusError
from .impls import IMPLS, INITS
from .precision import DTYPES
from .train import TrainConfig, Trainer, resolve_device

PREFIXES = ("time traveller", "traveller")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: error: {message}")


def _number(convert, in_range, expected: str, out_of_range: str | None = None, show_text: bool = False):
    """An argparse type: ``convert(text)`` that must satisfy ``in_range``, else one line
    "expected {expected}, got …" (``out_of_range`` words it for a value outside the range;
    ``show_text``: quote the text as typed, not the converted value)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not in_range(value):
            raise argparse.ArgumentTypeError(f"expected {out_of_range or expected}, got "
                                             f"{text if show_text else value}")
        return value
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number", show_text=True)
_non_negative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0",
                              "a finite number >= 0", show_text=True)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -(2 ** 63) <= value < 2 ** 64:  # torch.Generator.manual_seed's range
        raise argparse.ArgumentTypeError(f"expected an integer in [-2**63, 2**64), got {value}")
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
    t.add_argument("--plot", default=None,
                   help="PNG of train and validation perplexity per epoch (d2l's figure), rewritten every epoch")
    t.add_argument("--num-preds", type=_non_negative_int, default=50, help="characters to predict per prefix")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    k = sub.add_parser("kernels", help="compile every kernel configuration for a GPU and report registers/spills")
    k.add_argument("--arch", default="sm_90", choices=("sm_80", "sm_90", "gfx90a", "gfx942", "gfx950"),
                   help="NVIDIA compute capability or AMD Instinct ISA (MI250X, MI300X, MI355X)")
    k.add_argument("--scope", default="all", choices=("all", "representative", "ci", "rated"),
                   help="which builds: every one the launchers can pick (hours), or a smaller set")
    k.add_argument("--json", action="store_true")
    k.add_argument("--sass", action="store_true",
                   help="disassemble every build to count its SASS MMAs (default: the d2l/large rows)")

    g = sub.add_parser("generate", help="continue a prefix with a trained char LM (from a train --save checkpoint)")
    g.add_argument("--checkpoint", required=True, help="checkpoint written by train --save (any cell, any impl)")
    g.add_argument("--prefix", default="time traveller",
                   help="text to continue, in the checkpoint's vocabulary (default: 'time traveller')")
    g.add_argument("--num-chars", type=_non_negative_int, default=200,
                   help="characters to generate after the prefix (default 200; 0 = the prefix alone)")
    g.add_argument("--temperature", type=_non_negative_float, default=0.0,
                   help="0 (default): greedy, d2l's predict_ch8, the text train prints; "
                        "above 0: sample from softmax(logits / temperature)")
    g.add_argument("--top-k", type=_positive_int, default=None,
                   help="sample from the K most likely characters only (with --temperature > 0)")
    g.add_argument("--seed", type=_seed, default=None,
                   help="seed of the sampler: the same seed gives the same text on the same device "
                        "(with --temperature > 0; default: a fresh seed every run)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--impl", choices=IMPLS, default=None,
                   help="run on this implementation (default: the checkpoint's; a triton checkpoint on a CPU "
                        "without TRITON_INTERPRET=1 runs on nn)")
    return parser


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.nonlinearity is not None and args.cell != "rnn":
        raise UsageError(f"lstm-triton train: error: argument --nonlinearity: applies to --cell rnn only, "
                         f"not --cell {args.cell}")
    if args.fusion is not None and args.impl != "triton":
        raise UsageError(f"lstm-triton train: error: argument --fusion: applies to --impl triton only, "
                         f"not --impl {args.impl}")
    try:  # before the process group: every rank refuses alike, no rendezvous to hang on
        distributed.check_batch_split(args.batch_size, distributed.env_world_size())
    except ValueError as exc:
        raise UsageError(f"lstm-triton train: error: argument --batch-size: {exc}") from None
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


def _check_plot_path(path: str | None) -> None:
    """``--plot``: a writable ``.png`` file path, and matplotlib importable (the charlm extra's)."""
    if not path:
        return
    _check_output_path("--plot", path)
    if Path(path).suffix.lower() != ".png":
        raise UsageError(f"lstm-triton train: error: argument --plot: {path} does not end in .png, "
                         f"the figure is written as PNG")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("lstm-triton train: error: argument --plot: needs matplotlib: "
                         "pip install 'lstm-triton[charlm]'")


def _plot_title(trainer: Trainer) -> str:
    """The figure's title: cell, implementation and, for triton, the fusion level training runs."""
    from .plot import perplexity_title

    cfg, fusion = trainer.cfg, None
    if cfg.impl == "triton":
        from ..layers.backend import choose_fusion

        ran = choose_fusion(cfg.fusion, cfg.batch_size, cfg.hidden_size, torch.float32, trainer.device,
                            cell=cfg.mode.upper())
        fusion = ran if cfg.fusion == ran else f"{cfg.fusion}: {ran}"
    return perplexity_title(cfg.impl, cfg.cell, cfg.nonlinearity, fusion)


def run_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .model import predict
    from .plot import plot_perplexity

    cfg = _config(args)
    _check_output_path("--save", args.save)  # a --resume file is checked when it is read
    _check_output_path("--metrics-csv", args.metrics_csv)
    _check_plot_path(args.plot)
    try:
        trainer = Trainer(cfg, distributed.init_from_env(args.device))  # joins torchrun's group, if any
        if args.resume:
            trainer.resume(args.resume)
    except (ValueError, CorpusError, CheckpointError, NotImplementedError) as exc:
        raise UsageError(f"lstm-triton train: error: {exc}") from None

    save_path = args.save or args.resume
    main_process = distributed.is_main_process()  # under torchrun only rank 0 writes, prints and shows the bar
    title = _plot_title(trainer) if args.plot else ""
    first_epoch = trainer.epoch
    bar = tqdm(total=trainer.cfg.epochs, initial=trainer.epoch, unit="epoch",
               disable=args.no_progress or not main_process,
               desc=f"train {cfg.cell} {args.impl}", dynamic_ncols=True)

    def after_epoch(tr: Trainer, row: dict) -> None:
        if not main_process:
            return
        if save_path:
            tr.save(save_path)
        if args.plot:  # every epoch (history from epoch 1, resumed or not): an interrupted run keeps its figure
            plot_perplexity(tr.metrics(), args.plot, title)
        bar.set_postfix(ppl=f"{row['train_perplexity']:.2f}", val=f"{row['val_perplexity']:.2f}",
                        tok_s=f"{row['tokens_per_sec']:.0f}")
        bar.update(1)

    try:
        metrics = trainer.fit(after_epoch)
    except KeyboardInterrupt:
        bar.close()
        where = f"; last checkpoint: {save_path} (epoch {trainer.epoch})" if save_path else ""
        if main_process:
            print(f"interrupted after epoch {trainer.epoch}{where}", file=sys.stderr)
        return 130
    bar.close()
    if not main_process:
        return 0
    if args.plot and trainer.epoch == first_epoch and trainer.history:  # resumed a finished run: no epoch drew it
        plot_perplexity(metrics, args.plot, title)

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


def run_generate(args: argparse.Namespace) -> int:
    """Print ``--prefix`` and ``--num-chars`` characters the checkpoint's model continues it with."""
    from .generate import load_for_generation, sample, unknown_characters

    def fail(message: str) -> UsageError:
        return UsageError(f"lstm-triton generate: error: {message}")

    if not args.prefix:
        raise fail("argument --prefix: expected a non-empty string (the model needs a character to start from)")
    if args.temperature == 0:  # greedy: a sampler option would be silently ignored
        for flag, value in (("--top-k", args.top_k), ("--seed", args.seed)):
            if value is not None:
                raise fail(f"argument {flag}: applies to sampling (--temperature > 0), not greedy decoding")
    try:
        device = resolve_device(args.device)
        loaded = load_for_generation(args.checkpoint, device, args.impl)
    except (ValueError, CheckpointError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    unknown = unknown_characters(args.prefix, loaded.vocab)
    if unknown:
        known = "".join(sorted(t for t in loaded.vocab.idx_to_token if len(t) == 1))
        raise fail(f"argument --prefix: characters outside the checkpoint's vocabulary: "
                   f"{', '.join(map(repr, unknown))} (it has {known!r})")
    if loaded.note:
        print(f"lstm-triton generate: {loaded.note}", file=sys.stderr)

    generator = None
    if args.temperature > 0:
        generator = torch.Generator(device=device)
        if args.seed is None:
            generator.seed()  # a fresh, non-deterministic seed
        else:
            generator.manual_seed(args.seed)
    with loaded.autocast():
        text = sample(loaded.model, args.prefix, args.num_chars, loaded.vocab, device,
                      temperature=args.temperature, top_k=args.top_k, generator=generator)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            try:
                code = run_train(args)
                if code == 0:
                    distributed.barrier()  # the other ranks wait until rank 0 has written its files
                return code
            finally:
                distributed.teardown()
        if args.command == "generate":
            return run_generate(args)
        if args.command == "kernels":
            from ..layers.kernel_report import main as report

            return report(["--arch", args.arch, "--scope", args.scope] + (["--json"] if args.json else [])
                          + (["--sass"] if args.sass else []))
        raise UsageError(f"lstm-triton: error: unknown command {args.command!r}")
    except UsageError as exc:
        line = str(exc).splitlines()[0]
        if distributed.is_main_process():  # under torchrun every rank refuses, rank 0 says why
            print(line, file=sys.stderr)
        # ... before any rank exits (torchrun would stop rank 0); a rank that refused alone says why itself
        if not distributed.exit_together() and not distributed.is_main_process():
            print(f"{line} (rank {distributed.rank()})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
