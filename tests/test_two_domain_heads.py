"""two_domain_heads (issue 13 §3): the forced-BOS ΔCE measurement, the attention-target split and
the inputs of the relative BOS claim, at tiny scale."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import two_domain_heads as td
from sinks_jax.config import ModelConfig
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT, Interventions
from sinks_jax.tasks.bigram_backcopy.config import BBDataConfig
from sinks_jax.tasks.bigram_backcopy.data import make_task

TINY = ModelConfig(vocab_size=12, max_len=8, d_model=16, d_mlp=32, n_layers=2, n_heads=2)


def _tokens_and_truth(seed: int = 0):
    key_t, key_p = jax.random.split(jax.random.key(seed))
    tokens_BxT = jax.random.randint(key_t, (4, 8), 0, TINY.vocab_size)
    true_BxTxV = jax.nn.softmax(jax.random.normal(key_p, (4, 8, TINY.vocab_size)))
    return tokens_BxT, true_BxTxV


def test_domain_ce_is_the_cross_entropy_over_queries_after_the_first():
    model = GPT(TINY, rngs=nnx.Rngs(0))
    tokens, _ = _tokens_and_truth()
    one_hot = jax.nn.one_hot(jnp.roll(tokens, -1, axis=1), TINY.vocab_size)
    logp = jax.nn.log_softmax(model(tokens).logits)
    expected = -(one_hot * logp).sum(-1)[:, 1:].mean()
    np.testing.assert_allclose(td.domain_ce(model, tokens, one_hot), expected, rtol=1e-5)
    only = jnp.zeros(tokens.shape, bool).at[:, 3].set(True)
    np.testing.assert_allclose(
        td.domain_ce(model, tokens, one_hot, only),
        -(one_hot * logp).sum(-1)[:, 3].mean(),
        rtol=1e-5,
    )


def test_forced_bos_delta_ce_is_zero_for_a_head_without_values_and_not_otherwise():
    model = GPT(TINY, rngs=nnx.Rngs(0))
    tokens, truth = _tokens_and_truth()
    k = TINY.d_model // TINY.n_heads
    value = model.blocks[1].attn.value  # head 1 of layer 1 writes nothing, wherever it attends
    value.kernel[...] = value.kernel[...].at[:, k:].set(0.0)
    value.bias[...] = value.bias[...].at[k:].set(0.0)
    silent = td.forced_bos_delta_ce(model, tokens, truth, (1, 1))
    assert abs(silent["delta_ce"]) < 1e-6
    live = td.forced_bos_delta_ce(model, tokens, truth, (1, 0))
    assert abs(live["delta_ce"]) > 1e-4
    forced = td.domain_ce(model, tokens, truth, None, Interventions(attention_to_bos=((1, 0),)))
    np.testing.assert_allclose(live["ce_forced"], forced, rtol=1e-6)
    np.testing.assert_allclose(live["delta_ce"], live["ce_forced"] - live["ce"], rtol=1e-6)


def test_attention_targets_split_the_mass_into_bos_self_previous_and_other():
    t = 6
    causal = jnp.tril(jnp.ones((t, t)))
    att = jax.nn.softmax(
        jnp.where(causal, jax.random.normal(jax.random.key(1), (2, 1, t, t)), -1e9)
    )
    split = td.attention_targets(att, jnp.ones((2, t), bool))
    np.testing.assert_allclose(sum(split[k] for k in td.TARGETS), 1.0, rtol=1e-5)
    prev_only = jnp.broadcast_to(jnp.eye(t, k=-1).at[0, 0].set(1.0), (2, 1, t, t))
    split = td.attention_targets(prev_only, jnp.ones((2, t), bool))
    assert float(split["prev"][0]) == 1.0
    assert float(split["bos"][0]) == 0.0
    # query selection: only t = 3 (the bos/self/prev keys of t < 2 overlap and are excluded)
    bos_at_3 = prev_only.at[:, :, 3].set(jnp.eye(t)[0])
    split = td.attention_targets(bos_at_3, jnp.zeros((2, t), bool).at[:, 3].set(True))
    assert float(split["bos"][0]) == 1.0


def _final(bos_b, bos_b_trig, bos_a_non_trig, bos_a_trig, prev_a):
    """An eval row with two layers of one head; layer 1 is the copying head."""
    quiet = {"bos_all": [0.1], "bos_trigger_chars": [0.1], "bos_non_trigger_chars": [0.1]}
    return {
        "attn_a": [
            {**quiet, "prev_trigger_chars": [0.2]},
            {
                "bos_all": [0.0],  # includes trigger queries: not what the claims compare with
                "bos_non_trigger_chars": [bos_a_non_trig],
                "bos_trigger_chars": [bos_a_trig],
                "prev_trigger_chars": [prev_a],
            },
        ],
        "attn_b": [
            {**quiet, "prev_trigger_chars": [0.0]},
            {
                "bos_all": [bos_b],
                "bos_trigger_chars": [bos_b_trig],
                "bos_non_trigger_chars": [bos_b],
                "prev_trigger_chars": [0.0],
            },
        ],
    }


def test_relative_claim_compares_domain_b_with_the_heads_own_sink_on_a_non_trigger_queries():
    final = _final(0.62, 0.60, 0.66, 0.001, 0.98)
    layer, head = td.active_head(final)
    assert (layer, head) == (1, 0)
    stats = td.head_stats(final, layer, head)
    assert stats["bos_a_non_trigger"] == 0.66
    assert stats["bos_b"] == 0.62
    rel = {c.name: c for c in td.dormancy_claims("m", stats, "relative")}
    ratio = rel["m_head_bos_attn_domain_b_over_domain_a_non_trigger"]
    assert ratio.passed
    assert ratio.measured == pytest.approx(0.62 / 0.66)
    assert ratio.threshold == ">= 0.9"
    assert rel["m_head_bos_attn_domain_b_trigger_chars_over_domain_a_non_trigger"].passed
    assert rel["m_head_bos_attn_domain_a_non_trigger"].passed  # the A-side sink is real (>= 0.5)
    absolute = {c.name: c for c in td.dormancy_claims("m", stats, "absolute")}
    assert not absolute["m_head_bos_attn_domain_b"].passed  # 0.62 is not > 0.9
    assert absolute["m_head_bos_attn_domain_a_triggers"].passed
    # a head with no sink on A cannot pass by a ratio of two small numbers
    weak = {
        c.name: c
        for c in td.dormancy_claims(
            "m", td.head_stats(_final(0.1, 0.1, 0.1, 0, 1), 1, 0), "relative"
        )
    }
    assert weak["m_head_bos_attn_domain_b_over_domain_a_non_trigger"].passed
    assert not weak["m_head_bos_attn_domain_a_non_trigger"].passed
    none = td.dormancy_claims("m", td.head_stats(_final(0.1, 0.1, 0.0, 0, 1), 1, 0), "relative")
    assert not any(c.passed for c in none if "over_domain_a" in c.name)


def test_intervention_claims_and_the_claim_mode_in_the_config():
    ok = {c.name: c.passed for c in td.intervention_claims("m", 0.0009, 1.08)}
    assert ok == {"m_forced_bos_delta_ce_domain_b": True, "m_forced_bos_delta_ce_domain_a": True}
    bad = {c.name: c.passed for c in td.intervention_claims("m", 0.05, 0.2)}
    assert not any(bad.values())
    assert td.PRESETS["quick"].bos_claim == "relative"
    assert td.PRESETS["paper"].bos_claim == "absolute"
    with pytest.raises(ConfigError, match="bos_claim"):
        dataclasses.replace(td.PRESETS["quick"], bos_claim="ratio")


def test_trigger_role_attention_counts_earlier_keys_holding_a_role_character():
    t = 5
    att = jnp.zeros((1, 1, t, t)).at[0, 0, 4, 1].set(0.5).at[0, 0, 4, 3].set(0.5)  # q4: k1, k3
    role = jnp.zeros((1, t), bool).at[0, 1].set(True).at[0, 3].set(True)
    only_q4 = jnp.zeros((1, t), bool).at[0, 4].set(True)
    # key 3 is the previous token of query 4, so only key 1 counts
    np.testing.assert_allclose(td.trigger_role_attention(att, role, only_q4), [0.5])
    task = make_task(BBDataConfig(), 0)
    same = td.make_domains(task, "first_token", 0).trigger_roles()
    np.testing.assert_array_equal(same[0], same[1])
    a_roles, b_roles = td.make_domains(task, "content", 0).trigger_roles()
    assert a_roles.sum() == b_roles.sum() == len(task.triggers)
    dom = td.make_domains(task, "content", 0)
    for trig in task.triggers:  # B's image of a trigger has the trigger's bigram row
        img = int(dom.perm[trig])
        assert b_roles[img]
        np.testing.assert_allclose(np.sort(dom.b.cond[img]), np.sort(task.cond[trig]))
