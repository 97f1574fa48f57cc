"""Let torch.compile trace our layers: dynamo's ``allow_rnn`` switch, set when dynamo loads.

Dynamo refuses to trace any module that is an ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (a blanket guard,
``torch._dynamo.config.allow_rnn``, off by default) and breaks the graph around it; our layers *are*
those classes (drop-ins pass ``isinstance`` checks), while their computation is traceable (custom
operators with fake implementations). So the switch is turned on. Side effect: plain torch.nn RNNs
in compiled models are traced too (torch's experimental path; on CPU it compiles with eager,
aot_eager and inductor in torch 2.13).

Importing ``torch._dynamo`` costs ~2 CPU-seconds, as much as ``import torch`` itself, and most
processes that use the layers never compile. So the switch is not set at import time: a one-shot
import hook sets it right after ``torch._dynamo.config`` is first executed (by ``torch.compile``,
``torch.export`` or anything else), and before any tracing can read it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_CONFIG = "torch._dynamo.config"


class _AllowRnnOnLoad(importlib.abc.MetaPathFinder):
    """A meta-path finder that finds nothing itself: for ``torch._dynamo.config`` it takes the
    regular spec and wraps its loader so that the module's execution ends with ``allow_rnn = True``."""

    def find_spec(self, name, path, target=None):
        if name != _CONFIG:
            return None
        sys.meta_path.remove(self)  # one use; and find_spec below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module, load=load):
                load(module)
                module.allow_rnn = True

            spec.loader.exec_module = exec_module
        return spec


def allow_rnn_in_dynamo() -> None:
    """Set ``torch._dynamo.config.allow_rnn = True`` now if dynamo is loaded, else when it loads."""
    config = sys.modules.get(_CONFIG)
    if config is not None:
        config.allow_rnn = True
    elif not any(isinstance(f, _AllowRnnOnLoad) for f in sys.meta_path):
        sys.meta_path.insert(0, _AllowRnnOnLoad())
