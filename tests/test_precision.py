"""The bf16 precision policy and the fused attention path (issue 15 §3): both are options that
leave the float32, explicit-attention default untouched."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sinks_jax.batch import Batch
from sinks_jax.config import ModelConfig, OptimConfig
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT, Capture, Interventions, ScaleValues
from sinks_jax.train import init_state, make_optimizer, make_train_step, next_token_loss

TINY = ModelConfig(vocab_size=20, max_len=16, d_model=16, n_layers=2, n_heads=2, d_mlp=32)


def _tokens(b: int = 3, t: int = 12) -> jax.Array:
    return jax.random.randint(jax.random.key(1), (b, t), 0, TINY.vocab_size)


def _pair(**changes) -> tuple[GPT, GPT]:
    """The same parameters under the explicit and the fused attention path."""
    explicit = GPT(dataclasses.replace(TINY, **changes), rngs=nnx.Rngs(0))
    fused = GPT(dataclasses.replace(TINY, fused_attention=True, **changes), rngs=nnx.Rngs(0))
    return explicit, fused


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_fused_attention_matches_the_explicit_path_forward_and_gradients(positions):
    explicit, fused = _pair(positions=positions)
    toks = _tokens()
    segments = jnp.asarray([[1] * 5 + [2] * 7, [1] * 12, [1] * 9 + [0] * 3])
    for seg in (None, segments):
        a = explicit(toks, segment_ids_BxT=seg).logits
        b = fused(toks, segment_ids_BxT=seg).logits
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # float32 reassociation only

    batch = Batch(inputs=toks, targets=jnp.roll(toks, -1, 1))

    def grads(model):
        graphdef, params = nnx.split(model, nnx.Param)
        return jax.grad(lambda p: next_token_loss(nnx.merge(graphdef, p), batch))(params)

    for g_explicit, g_fused in zip(
        jax.tree.leaves(grads(explicit)), jax.tree.leaves(grads(fused)), strict=True
    ):
        np.testing.assert_allclose(g_explicit, g_fused, rtol=1e-4, atol=1e-6)


def test_fused_path_falls_back_to_the_explicit_one_for_captures_and_inner_edits():
    explicit, fused = _pair()
    toks = _tokens()
    out = fused(toks, capture=Capture(attention=True))
    assert out.observed[0].attn_weights is not None  # captured: the explicit path ran
    np.testing.assert_array_equal(
        out.logits, explicit(toks, capture=Capture(attention=True)).logits
    )
    edit = Interventions(edits=(ScaleValues(layers=(1,), positions=(0,), factor=0.0),))
    np.testing.assert_array_equal(
        fused(toks, interventions=edit).logits, explicit(toks, interventions=edit).logits
    )
    attn = fused.blocks[0].attn
    assert attn.fused(Capture(residual=True), Interventions(), 0)  # residuals need no weights
    assert not attn.fused(Capture(values=True), Interventions(), 0)
    assert (
        not GPT(
            dataclasses.replace(TINY, fused_attention=True, attention="alibi"), rngs=nnx.Rngs(0)
        )
        .blocks[0]
        .attn.fused(Capture(), Interventions(), 0)
    )


def test_bf16_policy_keeps_parameters_optimizer_state_and_logits_in_float32():
    cfg = dataclasses.replace(TINY, compute_dtype="bfloat16")
    model = GPT(cfg, rngs=nnx.Rngs(0))
    reference = GPT(TINY, rngs=nnx.Rngs(0))
    toks = _tokens()
    out = model(toks, capture=Capture(residual=True, blocks=True))
    assert out.logits.dtype == jnp.float32
    assert out.observed[0].residual.dtype == jnp.float32  # the residual stream stays fp32
    assert out.observed[0].mlp_out.dtype == jnp.bfloat16  # what the matmuls compute
    # Same parameters, bf16 matmuls: logits agree to bf16 precision (8 mantissa bits).
    np.testing.assert_allclose(out.logits, reference(toks).logits, rtol=0.05, atol=0.05)

    optimizer = make_optimizer(OptimConfig(), 10)
    graphdef, state = init_state(model, optimizer, 0)
    step = make_train_step(graphdef, optimizer)
    batch = Batch(inputs=toks, targets=jnp.roll(toks, -1, 1))
    for _ in range(3):
        state, metrics = step(state, batch)
    assert bool(jnp.isfinite(metrics["loss"]))
    dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if x.ndim}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_the_float32_default_is_unchanged_by_the_options():
    """compute_dtype='float32' and fused_attention=False are the defaults every preset uses."""
    assert TINY.compute_dtype == "float32"
    assert TINY.fused_attention is False
    with pytest.raises(ConfigError, match=r"model\.compute_dtype"):
        ModelConfig(compute_dtype="float16")


def test_a_run_saved_before_these_fields_existed_still_resumes(tmp_path):
    """A field added to the code counts as its default in an older saved config."""
    from sinks_jax.config import leaf_defaults, to_dict
    from sinks_jax.run_dir import check_resume_config
    from sinks_jax.tasks.bigram_backcopy.config import BBConfig

    cfg = BBConfig()
    saved = to_dict(cfg)
    del saved["model"]["compute_dtype"], saved["model"]["fused_attention"]
    defaults = leaf_defaults(BBConfig)
    check_resume_config(saved, to_dict(cfg), where=tmp_path, defaults=defaults)
    bf16 = to_dict(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, compute_dtype="bfloat16"))
    )
    with pytest.raises(ConfigError, match=r"model\.compute_dtype: 'float32' -> 'bfloat16'"):
        check_resume_config(saved, bf16, where=tmp_path, defaults=defaults)
