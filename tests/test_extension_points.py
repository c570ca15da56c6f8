"""Extension points: attention variants that use positions or add virtual keys, edits at named
sites (no edit of model.py), and capturing selected layers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.attention import (
    AlibiAttention,
    OffByOneSoftmaxAttention,
    QKNormAttention,
    SinkLogitAttention,
    SoftmaxAttention,
    causal_mask,
    with_virtual_keys,
)
from sinks_jax.config import ModelConfig
from sinks_jax.forward import apply
from sinks_jax.model import (
    GPT,
    SITES,
    AttentionToBOS,
    Capture,
    Edit,
    Interventions,
    ScaleValues,
    ZeroHeads,
)

CFG = ModelConfig(vocab_size=11, max_len=8, d_model=16, n_layers=2, n_heads=2, d_mlp=32)
TOKENS = jax.random.randint(jax.random.key(0), (2, 8), 0, 11)
MASK = jnp.broadcast_to(causal_mask(5), (1, 5, 5))
POS = jnp.arange(5)[None]


def test_off_by_one_softmax_matches_an_explicit_zero_logit():
    """softmax1(s)_j = exp(s_j) / (1 + Σ exp(s_k)): a softmax over [s, 0] without its last
    column (exact up to float32 rounding, rtol 1e-6)."""
    logits = jax.random.normal(jax.random.key(1), (1, 2, 5, 5)) * 4.0
    att = OffByOneSoftmaxAttention(2, 4, rngs=None).weights(logits, MASK)
    padded = jnp.concatenate(
        [jnp.where(MASK[:, None], logits, -jnp.inf), jnp.zeros((1, 2, 5, 1))], -1
    )
    expected = jax.nn.softmax(padded, axis=-1)[..., :5]
    np.testing.assert_allclose(att, expected, rtol=1e-6, atol=1e-7)
    assert float(att.sum(-1).max()) < 1.0  # the implicit key always takes some mass


def test_alibi_subtracts_the_head_slope_times_the_distance():
    q = jax.random.normal(jax.random.key(2), (1, 5, 2, 4))
    k = jax.random.normal(jax.random.key(3), (1, 5, 2, 4))
    variant = AlibiAttention(2, 4, rngs=None)
    plain = np.einsum("bthk,bshk->bhts", q, k) / 2.0
    slopes = np.array([2.0**-4, 2.0**-8])
    distance = np.arange(5)[:, None] - np.arange(5)[None, :]
    expected = plain - slopes[None, :, None, None] * distance
    np.testing.assert_allclose(variant.logits(q, k, POS), expected, rtol=1e-5, atol=1e-6)


def test_learned_sink_key_is_a_virtual_key_after_the_real_ones():
    cfg = dataclasses.replace(CFG, attention="sink_kv")
    model = GPT(cfg, rngs=nnx.Rngs(0))
    out = model(TOKENS, capture=Capture(attention=True, values=True))
    w = out.layers[0].attn_weights
    assert w.shape == (2, 2, 8, 9)  # 8 real keys + the learned sink
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    assert float(w[..., 8].min()) > 0.0  # every query sees the sink key
    assert out.layers[0].head_values.shape == (2, 2, 9, 16)
    # the sink's key and value are trained like any parameter
    grads = nnx.grad(lambda m: m(TOKENS).logits.sum())(model)
    assert float(jnp.abs(grads.blocks[0].attn.variant.sink_value[...]).sum()) > 0.0


@pytest.mark.parametrize(
    "variant", ["softmax1", "alibi", "sink_kv", "sink_logit", "gated", "qk_norm"]
)
def test_variants_keep_the_model_causal(variant):
    """Changing a later token leaves earlier logits unchanged (atol 1e-6)."""
    cfg = dataclasses.replace(
        CFG, attention=variant, positions="none" if variant == "alibi" else "learned"
    )
    model = GPT(cfg, rngs=nnx.Rngs(1))
    changed = TOKENS.at[:, 5].set((TOKENS[:, 5] + 1) % 11)
    a, b = model(TOKENS).logits, model(changed).logits
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert float(jnp.abs(a[:, 5:] - b[:, 5:]).max()) > 1e-4


def test_zero_heads_equals_zeroing_that_slice_of_w_o():
    model = GPT(CFG, rngs=nnx.Rngs(2))
    edited = model(TOKENS, interventions=Interventions(edits=(ZeroHeads(heads=((1, 0),)),)))
    k = CFG.d_head
    kernel = model.blocks[1].attn.out.kernel
    kernel[...] = kernel[...].at[:k].set(0.0)  # head 0's rows of W_o
    np.testing.assert_allclose(edited.logits, model(TOKENS).logits, rtol=1e-5, atol=1e-6)


def test_scale_values_to_zero_at_bos_matches_attention_without_bos_value():
    """Scaling BOS's value by 0 leaves the attention weights and removes BOS's W_o v."""
    model = GPT(CFG, rngs=nnx.Rngs(3))
    iv = Interventions(edits=(ScaleValues(layers=(0,), positions=(0,), factor=0.0),))
    out = model(TOKENS, capture=Capture.all(), interventions=iv)
    ref = model(TOKENS, capture=Capture.all())
    np.testing.assert_allclose(out.layers[0].attn_weights, ref.layers[0].attn_weights)
    assert float(jnp.abs(out.layers[0].head_values[:, :, 0]).max()) == 0.0
    np.testing.assert_allclose(
        out.layers[0].head_values[:, :, 1:], ref.layers[0].head_values[:, :, 1:]
    )


@dataclasses.dataclass(frozen=True, eq=False)
class PatchResidual(Edit):
    """Activation patching: replace the residual after `layers` with stored activations."""

    site = "residual"
    patch: jax.Array | None = None

    def __call__(self, x, layer):
        return self.patch


def test_a_custom_edit_patches_activations_without_touching_the_model():
    model = GPT(CFG, rngs=nnx.Rngs(4))
    other = TOKENS[::-1]
    source = model(other, capture=Capture(residual=True)).layers[1].residual
    patched = model(TOKENS, interventions=Interventions(edits=(PatchResidual((1,), source),)))
    np.testing.assert_allclose(patched.logits, model(other).logits, rtol=1e-5, atol=1e-5)
    jitted = nnx.jit(
        lambda m, t: m(t, interventions=Interventions(edits=(PatchResidual((1,), source),))).logits
    )
    np.testing.assert_allclose(jitted(model, TOKENS), patched.logits, rtol=1e-5, atol=1e-5)


def test_edits_holding_other_arrays_are_other_compiled_passes():
    """The cached forward treats edits as static: two patches of the same layer with other
    values must not share a compiled pass (an `eq=False` edit compared by `layers` alone did)."""
    model = GPT(CFG, rngs=nnx.Rngs(4))
    first, second = (
        model(t, capture=Capture(residual=True)).layers[1].residual for t in (TOKENS, TOKENS[::-1])
    )
    edits = [PatchResidual((1,), first), PatchResidual((1,), second)]
    assert edits[0] != edits[1]
    assert PatchResidual((1,), first) == PatchResidual((1,), first)  # same array object
    a, b = (apply(model, TOKENS, interventions=Interventions(edits=(e,))).logits for e in edits)
    np.testing.assert_allclose(b, model(TOKENS[::-1]).logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, b)
    # The array field of an eq=False subclass of a ready-made (eq=True) edit counts too.
    scaled = [ScaleByPosition((0,), factor_S=np.full(TOKENS.shape[1], f)) for f in (1.0, 0.0)]
    a, b = (apply(model, TOKENS, interventions=Interventions(edits=(e,))).logits for e in scaled)
    np.testing.assert_allclose(a, model(TOKENS).logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, b)


@dataclasses.dataclass(frozen=True, eq=False)
class ScaleByPosition(ScaleValues):
    """Scale each key position's values by its own factor (an array field)."""

    factor_S: np.ndarray | None = None

    def __call__(self, v_BxSxHxK, layer):
        return v_BxSxHxK * jnp.asarray(self.factor_S)[None, :, None, None]


def test_attention_to_bos_shorthand_is_the_ready_made_edit():
    model = GPT(CFG, rngs=nnx.Rngs(5))
    a = model(TOKENS, interventions=Interventions(attention_to_bos=((0, 1),))).logits
    b = model(TOKENS, interventions=Interventions(edits=(AttentionToBOS(heads=((0, 1),)),))).logits
    np.testing.assert_array_equal(a, b)


def test_an_edit_at_an_unknown_site_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Bad(Edit):
        site = "queries"

    with pytest.raises(ValueError, match="queries"):
        Interventions(edits=(Bad((0,)),))
    assert "attn_weights" in SITES


def test_capture_selected_layers_only():
    model = GPT(CFG, rngs=nnx.Rngs(6))
    full = model(TOKENS, capture=Capture.all())
    some = model(TOKENS, capture=Capture.all(layers=(1,)))
    assert some.layers[0].attn_weights is None
    assert some.layers[0].residual is None
    np.testing.assert_array_equal(some.layers[1].attn_weights, full.layers[1].attn_weights)
    np.testing.assert_array_equal(some.logits, full.logits)


def test_sink_logit_is_a_zero_value_virtual_key_between_softmax_and_softmax1():
    """b → −∞ gives plain softmax over the real keys; b = 0 gives softmax1 (rtol 1e-6)."""
    q = jax.random.normal(jax.random.key(5), (1, 5, 2, 4))
    k = jax.random.normal(jax.random.key(6), (1, 5, 2, 4))
    v = jax.random.normal(jax.random.key(7), (1, 5, 2, 4))
    variant = SinkLogitAttention(2, 4, rngs=nnx.Rngs(0))
    k_s, v_s = variant.keys_values(k, v)
    assert k_s.shape == (1, 6, 2, 4)
    np.testing.assert_array_equal(v_s[:, 5], 0.0)  # the virtual key adds no value
    mask = with_virtual_keys(MASK, 1)
    scores = variant.logits(q, k_s, POS)
    np.testing.assert_allclose(scores[..., :5], np.einsum("bthk,bshk->bhts", q, k) / 2.0, rtol=1e-5)
    np.testing.assert_array_equal(scores[..., 5], 0.0)  # b initialised at 0
    att = variant.weights(scores, mask)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-6)
    softmax1 = OffByOneSoftmaxAttention(2, 4, rngs=None).weights(scores[..., :5], MASK)
    np.testing.assert_allclose(att[..., :5], softmax1, rtol=1e-6, atol=1e-7)
    variant.sink_logit[...] = jnp.full((2,), -1e9)
    att = variant.weights(variant.logits(q, k_s, POS), mask)
    plain = SoftmaxAttention(2, 4, rngs=None).weights(scores[..., :5], MASK)
    np.testing.assert_allclose(att[..., :5], plain, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(att[..., 5], 0.0, atol=1e-30)


def test_gated_attention_scales_each_head_output_by_a_sigmoid_gate_of_its_query():
    cfg = dataclasses.replace(CFG, attention="gated")
    model = GPT(cfg, rngs=nnx.Rngs(0))
    attn = model.blocks[0].attn
    x = jax.random.normal(jax.random.key(8), (2, 8, 16))
    heads = jax.random.normal(jax.random.key(9), (2, 8, 2, 8))
    gate = jax.nn.sigmoid(x @ attn.variant.gate_proj.kernel[...] + attn.variant.gate_proj.bias[...])
    np.testing.assert_allclose(
        attn.variant.gate(x, heads), heads * gate.reshape(2, 8, 2, 8), rtol=1e-6
    )
    # The captured per-head outputs are the gated ones: they sum (through W_o) to attn_out.
    out = model(TOKENS, capture=Capture(head_outputs=True, blocks=True))
    layer = out.observed[0]
    bias = attn.out.bias[...]
    np.testing.assert_allclose(layer.head_outputs.sum(1) + bias, layer.attn_out, atol=1e-5)


@pytest.mark.parametrize("name", ["sink_logit", "gated", "qk_norm"])
def test_new_variants_train_with_finite_gradients(name):
    model = GPT(dataclasses.replace(CFG, attention=name), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        logits = nnx.merge(graphdef, p)(TOKENS).logits
        return -jax.nn.log_softmax(logits)[..., 0].mean()

    grads = jax.grad(loss)(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_qk_norm_logits_are_bounded_by_the_gains():
    """RMS-normalised q and k (unit gains at init): |q·k| / sqrt(K) <= sqrt(K)."""
    variant = QKNormAttention(2, 4, rngs=nnx.Rngs(0))
    q = 100.0 * jax.random.normal(jax.random.key(10), (1, 5, 2, 4))
    k = 100.0 * jax.random.normal(jax.random.key(11), (1, 5, 2, 4))
    scores = variant.logits(q, k, POS)
    assert float(jnp.abs(scores).max()) <= 2.0 + 1e-4
