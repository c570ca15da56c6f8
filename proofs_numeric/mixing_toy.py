"""The attention-only toy of the over-mixing checks (Barbero et al. 2025, arXiv 2504.02732, §3).

A stack of L causal layers on a BOS (position 0) plus n tokens, width d, without MLP, in one of
two forms:

- residual (default): pre-LN without affine parameters, x <- x + A(LN(x)) LN(x) W_V;
- pure attention (`residual=False`, the setting of Dong et al. 2021 that Barbero et al. build on):
  x <- A(x̂) x W_V, no residual and no LN on the stream. Dong et al.'s SAN has no normalisation at
  all; by default (`qk_norm=True`) we standardise the rows fed to queries and keys (x̂ = LN without
  ε or affine), so that A does not depend on the scale of x. Then a zero-value sink of mass a gives
  exactly x_L = (1 − a)^L × (its a = 0 value), and μ does not change. Without it (`qk_norm=False`)
  the (1 − a) factor would act as a softmax temperature on the next layer.

W_Q, W_K ~ N(0, 1/d), fresh per layer (default) or shared; W_V = I or a random orthogonal matrix.
Position 0 is either a regular token
(`Sink("none")`) or a sink whose value is 0, so attending to it is a no-op:

- `Sink("mass", a)`: every query i >= 1 puts exactly mass a on position 0 and (1 - a) on the
  softmax over keys 1..i (the clean control variable of the theory);
- `Sink("logit", b)`: position 0's logit is b for every query, the others as computed (what a
  trained model can do: the mass then depends on position and context length).

`attention="uniform"` replaces the scores by zeros (every visible non-sink key equal).
Everything here is pure jax.numpy and is meant to run under `jax.enable_x64(True)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

LN_EPS = 1e-5


@struct.dataclass
class Sink:
    """A pytree: `kind` is static, `a` and `b` are traced (no recompilation per value)."""

    kind: str = struct.field(pytree_node=False, default="mass")  # "none" | "mass" | "logit"
    a: float = 0.0  # exact mass on position 0 (kind "mass")
    b: float = 0.0  # logit of position 0 (kind "logit")


NO_SINK = Sink("mass", 0.0)  # position 0 takes no attention: the "no sink" of checks 1-4
REGULAR = Sink("none")  # position 0 is an ordinary token


def layer_norm(x_TxD: jax.Array) -> jax.Array:
    mean = x_TxD.mean(-1, keepdims=True)
    var = ((x_TxD - mean) ** 2).mean(-1, keepdims=True)
    return (x_TxD - mean) / jnp.sqrt(var + LN_EPS)


def standardize(x_TxD: jax.Array) -> jax.Array:
    """Row-wise (x − mean) / std without ε: exactly scale-invariant; a zero row stays zero."""
    centred = x_TxD - x_TxD.mean(-1, keepdims=True)
    var = (centred**2).mean(-1, keepdims=True)
    return centred / jnp.sqrt(jnp.where(var > 0, var, 1.0))


def random_weights(
    key: jax.Array, d: int, depth: int, shared: bool = False, w_v: str = "identity"
) -> dict[str, jax.Array]:
    """Stacked [L,d,d] W_Q, W_K (N(0, 1/d)) and W_V (identity or random orthogonal)."""
    n_draw = 1 if shared else depth
    kq, kk, kv = jax.random.split(key, 3)
    wq = jax.random.normal(kq, (n_draw, d, d)) / jnp.sqrt(d)
    wk = jax.random.normal(kk, (n_draw, d, d)) / jnp.sqrt(d)
    if w_v == "identity":
        wv = jnp.broadcast_to(jnp.eye(d), (n_draw, d, d))
    else:
        wv = jnp.linalg.qr(jax.random.normal(kv, (n_draw, d, d)))[0]
    tile = (lambda w: jnp.broadcast_to(w, (depth, d, d))) if shared else (lambda w: w)
    return {"wq": tile(wq), "wk": tile(wk), "wv": tile(wv)}


def attention_weights(z_TxD, wq, wk, sink: Sink, attention: str = "softmax") -> jax.Array:
    """[T,T] attention of one layer on normalised inputs z (rows: queries)."""
    t, d = z_TxD.shape
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = (z_TxD @ wq) @ (z_TxD @ wk).T / jnp.sqrt(d)
    if attention == "uniform":
        scores = jnp.zeros_like(scores)
    if sink.kind == "none":
        return jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    if sink.kind == "logit":
        scores = scores.at[:, 0].set(sink.b)
        return jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    # exact mass: a on position 0, (1 - a) on the softmax over keys 1..i; row 0 sees only itself
    rest = causal & (jnp.arange(t)[None] >= 1)
    rest = rest.at[0, 0].set(True)
    soft = jax.nn.softmax(jnp.where(rest, scores, -jnp.inf), axis=-1)
    mixed = (1.0 - sink.a) * soft.at[:, 0].set(0.0)
    return mixed.at[:, 0].add(sink.a).at[0].set(jnp.zeros(t).at[0].set(1.0))


def layer(
    x_TxD,
    wq,
    wk,
    wv,
    sink: Sink,
    attention: str = "softmax",
    residual: bool = True,
    qk_norm: bool = True,
) -> jax.Array:
    """One attention layer, pre-LN with residual or pure (see the module docstring); a sink's
    value is 0."""
    if residual:
        z = layer_norm(x_TxD)
        att = attention_weights(z, wq, wk, sink, attention)
        values = z @ wv
    else:
        att = attention_weights(standardize(x_TxD) if qk_norm else x_TxD, wq, wk, sink, attention)
        values = x_TxD @ wv
    if sink.kind != "none":
        values = values.at[0].set(0.0)
    return x_TxD + att @ values if residual else att @ values


@functools.partial(
    jax.jit, static_argnames=("attention", "depth", "collect", "residual", "qk_norm")
)
def forward(
    x_TxD,
    weights,
    sink: Sink,
    attention: str = "softmax",
    depth: int | None = None,
    collect: bool = False,
    residual: bool = True,
    qk_norm: bool = True,
):
    """Apply the first `depth` layers (default all); with `collect`, also return the stream
    after every layer, [L+1,T,D] (index 0 = input). `residual=False`: the pure stack."""
    depth = weights["wq"].shape[0] if depth is None else depth
    ws = (weights["wq"][:depth], weights["wk"][:depth], weights["wv"][:depth])

    def step(x, w):
        y = layer(x, *w, sink, attention, residual, qk_norm)
        return y, y

    x_out, stream = jax.lax.scan(step, x_TxD, ws)
    if collect:
        return x_out, jnp.concatenate([x_TxD[None], stream], axis=0)
    return x_out


@jax.jit
def token_uniformity(x_TxD: jax.Array) -> jax.Array:
    """μ(X) = ‖X − 1 x̄ᵀ‖_F / ‖X‖_F (Dong et al. 2021); 0 when all rows are equal."""
    centred = x_TxD - x_TxD.mean(0, keepdims=True)
    return jnp.linalg.norm(centred) / jnp.linalg.norm(x_TxD)


@functools.partial(jax.jit, static_argnames=("attention", "depth"))
def last_token_jacobian(
    x_TxD, weights, sink: Sink, attention: str = "softmax", depth: int | None = None
) -> jax.Array:
    """[T,D,D] blocks ∂y_n / ∂x_i of the last token's output w.r.t. every input token."""
    jac = jax.jacrev(lambda x: forward(x, weights, sink, attention, depth)[-1])(x_TxD)
    return jnp.transpose(jac, (1, 0, 2))  # [D_out,T,D_in] -> [T,D_out,D_in]


@jax.jit
def mixing_ratio(jac_TxDxD: jax.Array) -> jax.Array:
    """M = Σ_{i<n} ‖∂y_n/∂x_i‖_F / ‖∂y_n/∂x_n‖_F (Frobenius norms)."""
    norms = jnp.linalg.norm(jac_TxDxD, axis=(1, 2))
    return norms[:-1].sum() / norms[-1]
