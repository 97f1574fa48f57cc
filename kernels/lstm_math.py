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


@triton.jit
def tanh(x):
    # tl has no tanh on every supported release; 2σ(2x) − 1 is exact in exact arithmetic and
    # saturates correctly at ±inf (σ → 0 or 1), unlike the (e^2x − 1)/(e^2x + 1) form.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


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
