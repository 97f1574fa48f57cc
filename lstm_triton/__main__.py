"""The ``lstm-triton`` command (and ``python -m lstm_triton``): the char-LM application's CLI,
which needs the ``charlm`` extra; without it, one line saying so (exit status 2), not a traceback."""

import sys

APPLICATION_DEPENDENCIES = ("pandas", "tqdm")


def main(argv: list[str] | None = None) -> int:
    try:
        from .charlm.cli import main as run
    except ModuleNotFoundError as e:
        if e.name not in APPLICATION_DEPENDENCIES:
            raise
        print(f"lstm-triton: the command needs the charlm extra ({e.name} is not installed): "
              "pip install 'lstm-triton[charlm]'", file=sys.stderr)
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
