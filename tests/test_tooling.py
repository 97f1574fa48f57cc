"""PyTorch's tooling sees through the layer (issue 9, item 3): the kernels are operators
(torch.library) with fake implementations and registered autograd, so torch.compile, torch.export,
torch.jit.trace and torch.func work where they work for nn.LSTM. Tiny shapes: compiling is slow.
"""

import io
import shutil

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.func import functional_call, grad, jacrev, vjp
from torch.library import opcheck

import lstm_triton
from lstm_triton.charlm.impls import build_char_lm

from .helpers import DEVICE, rel_err


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("fusion, P", [("cell", None), ("step", None), ("persistent", None), ("auto", 3)],
                         ids=["cell", "step", "persistent", "projected"])
def test_the_operators_pass_opcheck(fusion, P):
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch with dynamic shapes
    (``P``: nn.LSTM's proj_size, W_hr (P, H) and W_hh (4H, P))."""
    gen = torch.Generator().manual_seed(0)
    H, K = 5, P or 5
    xp, h0, c0, w = (torch.randn(s, generator=gen).to(DEVICE).requires_grad_() for s in ((4, 2, 4 * H), (2, K),
                                                                                          (2, H), (4 * H, K)))
    w_hr = None if P is None else torch.randn(P, H, generator=gen).to(DEVICE).requires_grad_()
    opcheck(torch.ops.lstm_triton.recurrence.default, (xp, h0, c0, w, w_hr, fusion))
    _, _, c_all, acts = torch.ops.lstm_triton.recurrence(xp.detach(), h0.detach(), c0.detach(), w.detach(),
                                                         None if w_hr is None else w_hr.detach(), fusion)
    dy, dc = torch.randn(4, 2, K, device=DEVICE), torch.randn(2, H, device=DEVICE)
    opcheck(torch.ops.lstm_triton.recurrence_backward.default,
            (dy, dc, w.detach(), None if w_hr is None else w_hr.detach(), c_all, acts, fusion))


def _train_char_lm(steps, lengths, wrap=lambda m: m, mark_dynamic=False):
    """3 SGD steps of the char LM (H=32), sequence lengths cycling through ``lengths``; the losses."""
    model = build_char_lm("triton", 28, 32, seed=1, device=DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    forward = wrap(model)
    gen = torch.Generator().manual_seed(0)
    state, losses = model.begin_state(4, DEVICE), []
    for step in range(steps):
        T = lengths[step % len(lengths)]
        X, Y = (torch.randint(0, 28, (4, T), generator=gen).to(DEVICE) for _ in range(2))
        if mark_dynamic:
            torch._dynamo.mark_dynamic(X, 1)  # the sequence length: one graph for every T
        logits, state = forward(X, tuple(s.detach() for s in state))
        loss = nn.functional.cross_entropy(logits, Y.T.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_char_lm_trains_like_eager_and_compiles_once_for_all_lengths(backend):
    lengths = [5, 7, 9]
    eager = _train_char_lm(3, lengths)
    counter = CompileCounterWithBackend(backend)
    compiled = _train_char_lm(3, lengths, lambda m: torch.compile(m, backend=counter), mark_dynamic=True)
    assert float(((compiled - eager).abs() / eager.abs()).max()) <= 1e-6, (compiled, eager)
    assert counter.frame_count == 1, f"{counter.frame_count} compilations for sequence lengths {lengths}"


def test_a_new_sequence_length_does_not_recompile_under_automatic_dynamic_shapes():
    """Without marking: the second length makes T symbolic (one recompile), later lengths reuse it."""
    counter = CompileCounterWithBackend("eager")
    _train_char_lm(4, [5, 7, 9, 11], lambda m: torch.compile(m, backend=counter))
    assert counter.frame_count == 2


def test_dynamo_sees_the_layer_without_a_graph_break():
    model = build_char_lm("triton", 28, 32, seed=1, device=DEVICE)
    explained = torch._dynamo.explain(model)(torch.randint(0, 28, (4, 5), device=DEVICE), model.begin_state(4, DEVICE))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    graphs = [m.graph for m in explained.graphs[0].modules() if isinstance(m, torch.fx.GraphModule)]
    assert any("lstm_triton.recurrence" in str(g) for g in graphs)  # in the autograd.Function's forward body


def test_the_compiled_backward_runs_the_kernel_backward_operator():
    """AOTAutograd must trace the kernels' backward, not the torch recomputation meant for create_graph."""
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = str(gm.graph)
            return gm
        return compiler

    layer = lstm_triton.LSTM(3, 5, backend="triton", device=DEVICE)
    compiled = torch.compile(layer, backend=aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw")))
    y, (h, c) = compiled(torch.randn(4, 2, 3, device=DEVICE, requires_grad=True))
    (y.sum() + c.sum()).backward()
    assert "lstm_triton.recurrence.default" in graphs["fw"]
    assert "lstm_triton.recurrence_backward.default" in graphs["bw"] and "tanh" not in graphs["bw"]


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="inductor needs a C compiler")
def test_inductor_compiles_the_layer():
    torch.manual_seed(0)
    layer = lstm_triton.LSTM(3, 5, backend="triton", device=DEVICE)
    x = torch.randn(4, 2, 3, device=DEVICE)
    results = []
    for fn in (layer, torch.compile(layer, backend="inductor")):
        xi = x.clone().requires_grad_()
        y, (h, c) = fn(xi)
        layer.zero_grad()
        (y.sum() + 2 * h.sum() + 3 * c.sum()).backward()
        results.append([y, h, c, xi.grad, layer.weight_hh_l0.grad.clone()])
    assert max(rel_err(a, b) for a, b in zip(*results)) <= 1e-6


def _pair(fusion):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, dtype=torch.float64)
    ours = lstm_triton.LSTM(3, 5, fusion=fusion, backend="triton", device=DEVICE)
    ours.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    return ref, ours


TRANSFORMS = {
    "grad": lambda m, p, x: grad(lambda p: functional_call(m, p, (x,))[0].pow(2).sum())(p)["weight_hh_l0"],
    "vjp": lambda m, p, x: vjp(lambda x: functional_call(m, p, (x,))[0], x)[1](torch.ones_like(m(x)[0]))[0],
    "jacrev": lambda m, p, x: jacrev(lambda x: functional_call(m, p, (x,))[0])(x),
    "grad-of-grad": lambda m, p, x: grad(lambda x: grad(lambda x: m(x)[0].pow(2).sum())(x).pow(2).sum())(x),
}


@pytest.mark.parametrize("fusion", ["cell", "step", "persistent"])
@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_torch_func_transforms_match_nn_lstm(fusion, transform):
    ref, ours = _pair(fusion)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    expected = TRANSFORMS[transform](ref, dict(ref.named_parameters()), x)
    actual = TRANSFORMS[transform](ours, dict(ours.named_parameters()), x.float().to(DEVICE))
    assert rel_err(actual, expected) <= 1e-5


def test_jit_trace_records_the_operator_and_saves():
    _, ours = _pair("step")
    traced = torch.jit.trace(ours, (torch.randn(4, 2, 3, device=DEVICE),))
    assert "lstm_triton::recurrence" in str(traced.graph)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    traced = torch.jit.load(buffer)
    x = torch.randn(6, 2, 3, device=DEVICE)  # another length than traced
    assert all(torch.equal(a, b) for a, b in zip(traced(x)[1], ours(x)[1]))


def test_export_captures_the_operator_with_a_symbolic_sequence_length():
    _, ours = _pair("step")
    T = torch.export.Dim("T", min=2)
    program = torch.export.export(ours, (torch.randn(4, 2, 3, device=DEVICE),), dynamic_shapes=({0: T},))
    assert any("lstm_triton.recurrence" in str(n.target) for n in program.graph.nodes)
    x = torch.randn(7, 2, 3, device=DEVICE)
    y, (h, c) = program.module()(x)
    y_ref, (h_ref, c_ref) = ours(x)
    assert torch.equal(y, y_ref) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
