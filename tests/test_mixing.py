"""Over-mixing measurements on library models (sinks_jax.mixing)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sinks_jax import mixing
from sinks_jax.config import ModelConfig
from sinks_jax.model import GPT, Interventions

CFG = ModelConfig(vocab_size=11, max_len=16, d_model=16, d_mlp=32, n_layers=2, n_heads=2)


def test_token_uniformity_known_values():
    same = jnp.ones((1, 5, 4))
    assert float(mixing.token_uniformity(same)[0]) == 0.0
    x = jnp.array([[[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    assert float(mixing.token_uniformity(x)[0]) == 1.0  # positions 1..: mean 0


def test_influence_is_causal_and_mixing_ratio_matches():
    model = GPT(CFG, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (1, 8), 0, 11)
    influence = np.asarray(mixing.influence_by_position(model, tokens))
    assert influence.shape == (8,)
    assert np.all(influence > 0)
    m = float(mixing.mixing_ratio(model, tokens))
    assert np.isclose(m, influence[:-1].sum() / influence[-1], rtol=1e-6)
    layers = mixing.token_uniformity_by_layer(model, jnp.tile(tokens, (3, 1)))
    assert layers.shape == (3,)
    assert np.all((layers > 0) & (layers <= 1))


def test_attention_onto_bos_removes_mixing():
    """Moving every head onto position 0 makes every other token invisible to the last one."""
    model = GPT(CFG, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (1, 8), 0, 11)
    all_heads = tuple((l, h) for l in range(2) for h in range(2))
    embeddings = model.token_embed(tokens)

    def last(e):
        out = model(
            tokens,
            token_embeddings_BxTxD=e,
            interventions=Interventions(attention_to_bos=all_heads),
        )
        return out.logits[0, -1]

    jac = jax.jacrev(last)(embeddings)[:, 0]  # [V, T, D]
    norms = np.asarray(jnp.linalg.norm(jac, axis=(0, 2)))
    assert np.all(norms[1:-1] == 0.0)
    assert norms[0] > 0
    assert norms[-1] > 0
