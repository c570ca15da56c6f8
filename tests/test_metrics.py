"""Every metric on a hand-built case with a known answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sinks_jax import metrics


def _uniform_causal(t):
    a = np.tril(np.ones((t, t)))
    return a / a.sum(1, keepdims=True)


def _bos_attention(t, first=0.9):
    """Query 0 attends to itself; every other query puts `first` on key 0, the rest uniform."""
    a = np.zeros((t, t))
    a[0, 0] = 1.0
    for i in range(1, t):
        a[i, 0] = first
        a[i, 1 : i + 1] = (1 - first) / i
    return a


def test_sink_scores_uniform_attention():
    t = 4
    att = jnp.asarray(_uniform_causal(t))[None, None]
    scores = np.asarray(metrics.sink_scores(att))[0]
    # α_k = mean_{t>=k} 1/(t+1)
    expected = [np.mean([1 / (i + 1) for i in range(k, t)]) for k in range(t)]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_sink_scores_and_rate():
    att = np.stack([_bos_attention(5, 0.9), _uniform_causal(5)])[None]  # [1,2,5,5]
    first = np.asarray(metrics.sink_scores(jnp.asarray(att)))[:, 0]
    np.testing.assert_allclose(first[0], (1 + 4 * 0.9) / 5, rtol=1e-6)
    assert metrics.sink_rate([first], eps=0.3) == 1.0  # uniform: α_0 = mean 1/(t+1) = 0.457
    assert metrics.sink_rate([first], eps=0.5) == 0.5
    assert metrics.sink_rate([first], eps=0.95) == 0.0


def test_bb_attention():
    t = 5
    att = np.zeros((1, 1, t, t))
    att[0, 0, 0, 0] = 1
    trigger = np.array([[False, False, True, False, True]])
    for i in range(1, t):
        if trigger[0, i]:
            att[0, 0, i, i - 1] = 0.8
            att[0, 0, i, 0] = 0.2
        else:
            att[0, 0, i, 0] = 0.7
            att[0, 0, i, i] = 0.3
    out = metrics.bb_attention(jnp.asarray(att), jnp.asarray(trigger))
    np.testing.assert_allclose(out["bos_non_trigger"], [0.7], rtol=1e-6)
    np.testing.assert_allclose(out["bos_trigger"], [0.2], rtol=1e-6)
    np.testing.assert_allclose(out["prev_token_trigger"], [0.8], rtol=1e-6)


def test_delta_logit():
    t = 4
    logits = np.zeros((1, 1, t, t))
    logits[..., 0] = 5.0
    logits[0, 0, 2, 1] = 1.0  # query 2: others {1} -> mean 1
    logits[0, 0, 3, 1:3] = [2.0, 4.0]  # query 3: others {1,2} -> mean 3
    out = metrics.delta_logit(jnp.asarray(logits))
    np.testing.assert_allclose(out, [((5 - 1) + (5 - 3)) / 2], rtol=1e-6)
    only_q3 = metrics.delta_logit(jnp.asarray(logits), jnp.array([[True, True, False, True]]))
    np.testing.assert_allclose(only_q3, [2.0], rtol=1e-6)


def test_value_norms_and_summary():
    v = np.zeros((1, 1, 3, 2))
    v[0, 0, 0] = [0.3, 0.4]  # norm 0.5
    v[0, 0, 1] = [3.0, 4.0]  # norm 5
    v[0, 0, 2] = [0.0, 1.0]  # norm 1
    np.testing.assert_allclose(metrics.value_norms(jnp.asarray(v))[0, 0], [0.5, 5, 1], rtol=1e-6)
    s = metrics.value_summary(jnp.asarray(v))
    np.testing.assert_allclose(s["ratio"], [0.5 / 3], rtol=1e-6)


def test_residual_peak():
    r = np.zeros((2, 3, 2))
    r[:, 0] = [6.0, 8.0]  # norm 10
    r[:, 1] = [0.0, 2.0]
    r[:, 2] = [0.0, 4.0]
    out = metrics.residual_peak(jnp.asarray(r))
    assert float(out["peak"]) == pytest.approx(10 - 3)
    assert float(out["ratio"]) == pytest.approx(10 / 3)


def test_massive_activations():
    h = np.full((1, 4, 8), 0.01)
    h[0, 0, 3] = 500.0  # > 100 and > 1000 × median (0.01)
    h[0, 2, 5] = 50.0  # large but below 100
    out = metrics.massive_activations(h)
    assert out["count"] == 1
    assert out["dims"] == [3]
    assert out["positions"] == [0]


def test_bb_risks():
    v, t = 3, 3
    inputs_trigger = jnp.array([[False, True, False]])
    true_next = np.zeros((1, t, v))
    true_next[0, 0] = [1 / 3] * 3
    true_next[0, 1] = [0, 1, 0]  # copy target
    true_next[0, 2] = [0.5, 0.5, 0.0]
    logits = np.log(np.array([[[1 / 3] * 3, [0.25, 0.5, 0.25], [0.5, 0.25, 0.25]]]))
    out = metrics.bb_risks(jnp.asarray(logits), jnp.asarray(true_next), inputs_trigger)
    assert float(out["backcopy_risk"]) == pytest.approx(-np.log(0.5), rel=1e-5)
    bigram = -(0.5 * np.log(0.5) + 0.5 * np.log(0.25))  # position 2 only (pos 0 excluded)
    assert float(out["bigram_risk"]) == pytest.approx(bigram, rel=1e-5)
    assert float(out["bigram_excess"]) == pytest.approx(bigram - np.log(2), rel=1e-5)


def test_active_dormant_probe():
    probes = metrics.probe_sequences(np.array([2, 3]), bos_id=9, vocab=[0, 1])
    np.testing.assert_array_equal(probes, [[9, 2, 3, 0], [9, 2, 3, 1]])

    def attention_fn(tokens):  # token 1 is "active": low BOS attention at the last position
        n, t = tokens.shape
        att = np.zeros((n, 1, t, t))
        att[:, 0, -1, 0] = np.where(np.asarray(tokens[:, -1]) == 1, 0.1, 0.95)
        return att

    out = metrics.active_dormant(attention_fn, probes)
    assert out["active"].tolist() == [False, True]


def test_sink_scores_leave_out_virtual_keys_and_virtual_mass_finds_them():
    from flax import nnx

    from sinks_jax.config import ModelConfig
    from sinks_jax.forward import apply
    from sinks_jax.model import GPT, Capture

    x_BxT = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 8)), jnp.int32)

    def weights(attention: str) -> jax.Array:
        cfg = ModelConfig(
            vocab_size=11, max_len=8, d_model=16, n_layers=1, n_heads=2, d_mlp=32,
            attention=attention,
        )  # fmt: skip
        out = apply(GPT(cfg, rngs=nnx.Rngs(0)), x_BxT, capture=Capture(attention=True))
        return out.layers[0].attn_weights

    soft, sink, one = weights("softmax"), weights("sink_logit"), weights("softmax1")
    assert sink.shape == (2, 2, 8, 9)
    assert one.shape == (2, 2, 8, 8)
    # Same parameters: with the virtual key, each real weight is softmax's × (1 − virtual mass).
    off_BxHxT = sink[..., 8]
    np.testing.assert_allclose(sink[..., :8], soft * (1 - off_BxHxT[..., None]), atol=1e-6)
    assert metrics.sink_scores(sink).shape == (2, 8)
    np.testing.assert_allclose(metrics.virtual_mass(soft), 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics.virtual_mass(sink), off_BxHxT.mean((0, 2)), atol=1e-6)
    # softmax1 is sink_logit with the logit fixed at its initial 0 (issue 17 §1).
    np.testing.assert_allclose(metrics.virtual_mass(one), metrics.virtual_mass(sink), atol=1e-6)
