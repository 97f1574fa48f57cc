"""The LSTM cell's pointwise math as @triton.jit helpers, shared by every fusion level.

Gate order follows nn.LSTM: pre-activations [i, f, g, o]. Everything here is fp32.

Forward:  i,f,o = σ(·), g = tanh(·); c = f⊙c_prev + i⊙g; h = o⊙tanh(c).
Backward (dh = total upstream grad of h_t, dc = grad of c_t arriving from step t+1):
    tc = tanh(c);  dc_t = dc + dh⊙o⊙(1 − tc²)
    dGi = dc_t⊙g⊙i(1−i),  dGf = dc_t⊙c_prev⊙f(1−f),  dGg = dc_t⊙i⊙(1−g²),  dGo = dh⊙tc⊙o(1−o)
    dc_prev = dc_t⊙f
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice

from .launch_config import interpreter_on

# libdevice (CUDA's tanhf, ≤ 2 ulp) on a GPU; the interpreter has no libdevice, so there the same
# function evaluates a formula of its own, accurate to ~1e-7 relative: near 0 the odd minimax
# polynomial of Cephes' tanhf (2σ(2x) − 1 alone cancels to ~1e-4 relative at |x| ~ 1e-3),
# elsewhere 2σ(2x) − 1. The branch is resolved when the kernel is built (a constexpr global).
_INTERPRETED = tl.constexpr(interpreter_on())


@triton.jit
def tanh(x):
    """fp32 tanh with small relative error everywhere, from tiny to saturated inputs."""
    if _INTERPRETED:
        xc = tl.minimum(tl.maximum(x, -0.625), 0.625)
        z = xc * xc
        poly = (((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z
                + 1.33314422036e-1) * z - 3.33332819422e-1
        return tl.where(tl.abs(x) < 0.625, xc + xc * z * poly, 2.0 * tl.sigmoid(2.0 * x) - 1.0)
    else:
        return libdevice.tanh(x)


@triton.jit
def lstm_pointwise_forward(gi, gf, gg, go, c_prev):
    """Pre-activations and c_{t-1} (fp32) -> (i, f, g, o, c_t, h_t)."""
    i = tl.sigmoid(gi)
    f = tl.sigmoid(gf)
    g = tanh(gg)
    o = tl.sigmoid(go)
    c = f * c_prev + i * g
    h = o * tanh(c)
    return i, f, g, o, c, h


@triton.jit
def lstm_pointwise_backward(dh, dc, i, f, g, o, c, c_prev):
    """Upstream dh_t, dc_t and the saved step -> (dGi, dGf, dGg, dGo, dc_{t-1})."""
    tc = tanh(c)
    dc_t = dc + dh * o * (1.0 - tc * tc)
    dgi = dc_t * g * i * (1.0 - i)
    dgf = dc_t * c_prev * f * (1.0 - f)
    dgg = dc_t * i * (1.0 - g * g)
    dgo = dh * tc * o * (1.0 - o)
    return dgi, dgf, dgg, dgo, dc_t * f


@triton.jit
def store_gate_blocks(ptr, offset, H, a, b, c, d, mask):
    """Four per-gate values at ``offset``, ``+H``, ``+2H``, ``+3H`` (a (·,4H) row of saved activations)."""
    tl.store(ptr + offset, a, mask=mask)
    tl.store(ptr + offset + H, b, mask=mask)
    tl.store(ptr + offset + 2 * H, c, mask=mask)
    tl.store(ptr + offset + 3 * H, d, mask=mask)
