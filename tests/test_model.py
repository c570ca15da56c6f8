"""GPT model: causality, observables, interventions, init, variants."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.config import ModelConfig
from sinks_jax.model import GPT, Capture, Interventions

CFG = ModelConfig(vocab_size=11, max_len=16, d_model=16, d_mlp=32, n_layers=2, n_heads=2)


def _tokens(b=2, t=8, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, CFG.vocab_size)


def _embedding_jacobian_norms(model, tokens, **kw):
    """Σ|d logits[t] / d embedding[s]| for every (t, s), by exact autodiff (nanodo-style): the
    input embeddings are appended to the table and addressed by fresh token ids."""
    x = model.token_embed(tokens)
    t = tokens.shape[1]

    def f(emb_TxD):
        m = nnx.clone(model)
        table = jnp.concatenate([m.token_embed.embedding[...], emb_TxD], axis=0)
        m.token_embed.embedding = nnx.Param(table)
        ids = CFG.vocab_size + jnp.arange(t)[None]
        return m(ids, **kw).logits[0]

    jac = jax.jacrev(f)(x[0])  # [T,V,T,D]
    return np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [T_out, T_in]


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "none"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_causality_via_gradients(positions, norm):
    cfg = dataclasses.replace(CFG, positions=positions, norm=norm, vocab_size=CFG.vocab_size)
    model = GPT(dataclasses.replace(cfg), rngs=nnx.Rngs(0))
    sens = _embedding_jacobian_norms(model, _tokens(1))
    assert np.all(sens[np.triu_indices(8, 1)] == 0.0), "output depends on a future token"
    assert np.all(np.diag(sens) > 0)


def test_document_mask_isolates_documents():
    """With a document mask and restarting positions each document is computed as if it were
    run alone: the cross-document Jacobian blocks are 0, every earlier token of the same document
    matters, and each document's logits equal those of the document run by itself."""
    model = GPT(CFG, rngs=nnx.Rngs(0))
    tokens = _tokens(1)
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 2]])
    pos = jnp.array([[0, 1, 2, 0, 1, 2, 3, 4]])
    sens = _embedding_jacobian_norms(model, tokens, segment_ids_BxT=seg, positions_BxT=pos)
    assert np.all(sens[3:, :3] == 0.0)
    assert np.all(sens[:3, 3:] == 0.0)
    # inside a document every earlier token matters (a mask that cut more would fail here)
    assert np.all(sens[3:, 3:][np.tril_indices(5)] > 1e-3)
    assert np.all(sens[:3, :3][np.tril_indices(3)] > 1e-3)
    packed = np.asarray(model(tokens, segment_ids_BxT=seg, positions_BxT=pos).logits[0])
    alone_1 = np.asarray(model(tokens[:, :3]).logits[0])
    alone_2 = np.asarray(model(tokens[:, 3:]).logits[0])
    np.testing.assert_allclose(packed[:3], alone_1, rtol=1e-5, atol=1e-5)  # float32
    np.testing.assert_allclose(packed[3:], alone_2, rtol=1e-5, atol=1e-5)  # float32


def test_observables_shapes_and_consistency():
    model = GPT(CFG, rngs=nnx.Rngs(0))
    tokens = _tokens()
    plain = model(tokens)
    out = model(tokens, capture=Capture.all())
    assert plain.layers is None
    assert plain.embeddings is None
    np.testing.assert_allclose(out.logits, plain.logits, rtol=1e-6, atol=1e-6)
    assert len(out.layers) == 2
    obs = out.layers[0]
    assert obs.attn_weights.shape == (2, 2, 8, 8)
    assert obs.attn_logits.shape == (2, 2, 8, 8)
    assert obs.head_values.shape == (2, 2, 8, 16)
    assert obs.head_outputs.shape == (2, 2, 8, 16)
    assert obs.attn_out.shape == obs.mlp_out.shape == obs.residual.shape == (2, 8, 16)
    # per-head outputs add up (plus W_o's bias) to the attention block output
    bias = model.blocks[0].attn.out.bias[...]
    np.testing.assert_allclose(obs.head_outputs.sum(1) + bias, obs.attn_out, atol=1e-5)
    # residual after layer 0 = embeddings + attention out + MLP out (pre-LN)
    np.testing.assert_allclose(out.embeddings + obs.attn_out + obs.mlp_out, obs.residual, atol=1e-5)


def test_capture_costs_nothing_when_not_requested():
    """The logits-only program is the same size with or without the capture machinery: the
    default forward traces fewer equations than a capturing one, and once compiled, a capturing
    forward whose intermediates are dropped has exactly the default forward's FLOPs."""
    model = GPT(CFG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tokens = _tokens()

    def logits(p, capture):
        return nnx.merge(graphdef, p)(tokens, capture=capture).logits

    plain = jax.make_jaxpr(lambda p: logits(p, Capture()))(params)
    full = jax.make_jaxpr(lambda p: nnx.merge(graphdef, p)(tokens, capture=Capture.all()))(params)
    assert len(plain.eqns) < len(full.eqns)

    def flops(f):
        cost = jax.jit(f).lower(params).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["flops"]

    assert flops(lambda p: logits(p, Capture())) == flops(lambda p: logits(p, Capture.all()))


def test_interventions():
    model = GPT(CFG, rngs=nnx.Rngs(0))
    tokens = _tokens()
    full = model(tokens, capture=Capture.all())
    zeroed = model(tokens, capture=Capture.all(), interventions=Interventions(zero_attention=(1,)))
    np.testing.assert_array_equal(zeroed.layers[1].attn_out, 0.0)
    np.testing.assert_allclose(zeroed.layers[0].residual, full.layers[0].residual, atol=1e-6)
    assert not np.allclose(zeroed.logits, full.logits)
    no_mlp = model(tokens, capture=Capture.all(), interventions=Interventions(zero_mlp=(0,)))
    np.testing.assert_array_equal(no_mlp.layers[0].mlp_out, 0.0)

    moved = model(
        tokens, capture=Capture.all(), interventions=Interventions(attention_to_bos=((0, 1),))
    )
    att = np.asarray(moved.layers[0].attn_weights)
    np.testing.assert_array_equal(att[:, 1, :, 0], 1.0)
    np.testing.assert_array_equal(att[:, 1, :, 1:], 0.0)
    np.testing.assert_allclose(att[:, 0], full.layers[0].attn_weights[:, 0], atol=1e-6)


def test_removed_sublayers_have_no_parameters():
    cfg = dataclasses.replace(CFG, layers_without_attention=(0,), layers_without_mlp=(1,))
    model = GPT(cfg, rngs=nnx.Rngs(0))
    assert model.blocks[0].attn is None
    assert model.blocks[1].mlp is None
    out = model(_tokens(), capture=Capture.all())
    assert out.layers[0].attn_weights is None
    np.testing.assert_array_equal(out.layers[0].attn_out, 0.0)


def test_torch_and_gpt2_init():
    big = dataclasses.replace(CFG, d_model=128, d_mlp=256, vocab_size=500)
    torch = GPT(big, rngs=nnx.Rngs(0))
    emb = np.asarray(torch.token_embed.embedding[...])
    assert 0.95 < emb.std() < 1.05  # nn.Embedding: N(0, 1)
    kernel = np.asarray(torch.blocks[0].mlp.fc_in.kernel[...])
    bias = np.asarray(torch.blocks[0].mlp.fc_in.bias[...])
    bound = 1 / np.sqrt(128)
    assert np.abs(kernel).max() <= bound
    assert np.abs(bias).max() <= bound
    assert abs(kernel.std() - bound / np.sqrt(3)) < 0.1 * bound  # uniform(-b, b)
    np.testing.assert_array_equal(torch.blocks[0].ln_attn.scale[...], 1.0)
    np.testing.assert_array_equal(torch.blocks[0].ln_attn.bias[...], 0.0)
    gpt2 = GPT(dataclasses.replace(big, init="gpt2"), rngs=nnx.Rngs(0))
    assert abs(np.asarray(gpt2.blocks[0].mlp.fc_in.kernel[...]).std() - 0.02) < 0.002


@pytest.mark.parametrize(
    "override",
    [
        {"attention": "relu"},
        {"tie_embeddings": True},
        {"mlp_activation": "gelu"},
        {"final_norm": False},
        {"use_bias": False},
    ],
)
def test_variants_run(override):
    model = GPT(dataclasses.replace(CFG, **override), rngs=nnx.Rngs(0))
    out = model(_tokens(), capture=Capture(attention=True))
    assert np.isfinite(out.logits).all()
    if override.get("tie_embeddings"):
        assert model.head is None
