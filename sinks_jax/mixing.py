"""Over-mixing measurements for any model of this library (Barbero et al. 2025, §3; the toy
versions are in `proofs_numeric.over_mixing`): token uniformity per layer (check 1), the last
token's mixing ratio (check 4) and the influence of each input position on it (check 6).

Sensitivities are exact Jacobians (jax.jacrev) of the last position's residual stream after the
last block (before the final LN) with respect to the input token embeddings, Frobenius norms.
Pass tokens with or without BOS to compare the two at inference.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from sinks_jax.model import GPT, Capture, captured


def token_uniformity(x_BxTxD: jax.Array, skip_first: bool = True) -> jax.Array:
    """[B] μ(X) = ‖X − 1x̄ᵀ‖_F / ‖X‖_F per sequence, over positions 1.. (or all)."""
    chex.assert_rank(x_BxTxD, 3)
    x = x_BxTxD[:, 1:] if skip_first else x_BxTxD
    centred = x - x.mean(1, keepdims=True)
    return jnp.linalg.norm(centred, axis=(1, 2)) / jnp.linalg.norm(x, axis=(1, 2))


def token_uniformity_by_layer(
    model: GPT, tokens_BxT: jax.Array, skip_first: bool = True
) -> jax.Array:
    """[L+1] batch-mean μ of the residual stream at the input (index 0) and after each block."""
    out = model(tokens_BxT, capture=Capture(residual=True))
    streams = [captured(out.embeddings)] + [captured(layer.residual) for layer in out.observed]
    return jnp.stack([token_uniformity(s, skip_first).mean() for s in streams])


def influence_by_position(model: GPT, tokens_1xT: jax.Array) -> jax.Array:
    """[T] ‖∂h_last / ∂e_i‖_F: influence of each input token embedding on the last position's
    final residual stream, for one sequence."""
    chex.assert_shape(tokens_1xT, (1, None))
    emb = model.token_embed(tokens_1xT)

    def last_residual(e):
        out = model(tokens_1xT, capture=Capture(residual=True), token_embeddings_BxTxD=e)
        return out.layers[-1].residual[0, -1]

    jac = jax.jacrev(last_residual)(emb)  # [D, 1, T, D]
    return jnp.linalg.norm(jac[:, 0], axis=(0, 2))


def mixing_ratio(model: GPT, tokens_1xT: jax.Array) -> jax.Array:
    """M = Σ_{i<n} ‖∂h_n/∂e_i‖_F / ‖∂h_n/∂e_n‖_F for the last position n."""
    influence = influence_by_position(model, tokens_1xT)
    return influence[:-1].sum() / influence[-1]
