"""The design pieces a fork relies on: one run config with sweep groups, the weight-decay mask,
the cached train step and forward pass, figure style without global side effects, load_run."""

from __future__ import annotations

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import nnx

from sinks_jax.config import (
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    run_config,
)
from sinks_jax.errors import ConfigError
from sinks_jax.forward import apply, jit_with_model
from sinks_jax.model import GPT, Capture, Interventions
from sinks_jax.tasks.bigram_backcopy.config import BBConfig, BBDataConfig
from sinks_jax.train import init_state, make_optimizer, make_train_step

MODULES = [
    "bigram_backcopy",
    "residual_peak",
    "optimizer_mitigations",
    "two_domain_heads",
    "ctr_emergence",
    "ctr_low_rank",
    "sink_free_averaging",
    "lm_sinks",
    "context_length_sweep",
    "depth_sweep",
    "depth_design",
    "packing_sweep",
    "text_sink_search",
    "attention_variants",
    "lm_phenomenology",
]
TINY = ModelConfig(vocab_size=11, max_len=8, d_model=16, n_layers=2, n_heads=2, d_mlp=32)


@pytest.mark.parametrize("name", MODULES)
def test_every_training_config_is_a_run_config_and_sweeps_are_a_group(name):
    module = importlib.import_module(f"experiments.{name}")
    for cfg in module.PRESETS.values():
        assert isinstance(cfg, RunConfig)
        base = run_config(cfg)
        assert isinstance(base, RunConfig)
        assert "sweep" not in {f.name for f in dataclasses.fields(base)}
        assert (base.model, base.optim, base.train, base.seed) == (
            cfg.model,
            cfg.optim,
            cfg.train,
            cfg.seed,
        )


def test_sweep_fields_are_set_with_their_group_path():
    from experiments import ctr_emergence as ce

    cfg = apply_overrides(ce.PRESETS["quick"], ["sweep.n_seeds=3"])
    assert cfg.sweep.n_seeds == 3
    with pytest.raises(ConfigError, match="unknown config field 'n_seeds'"):
        apply_overrides(ce.PRESETS["quick"], ["n_seeds=3"])


def test_task_configs_validate_the_run_config_too():
    """A task config's own checks do not replace its parents' (each calls super)."""
    from experiments import ctr_low_rank as lr

    with pytest.raises(ConfigError, match=r"model\.n_heads"):
        dataclasses.replace(lr.PRESETS["quick"], model=dataclasses.replace(TINY, n_heads=2))
    with pytest.raises(ConfigError, match=r"model\.max_len"):
        BBConfig(model=TINY, data=BBDataConfig(seq_len=16))
    with pytest.raises(ConfigError, match="sink_eps"):
        BBConfig(model=TINY, data=BBDataConfig(seq_len=8), sink_eps=(1.5,))


def test_averaging_errors_name_the_data_fields():
    from sinks_jax.tasks import averaging as av

    with pytest.raises(ConfigError, match=r"data\.p_max"):
        av.AveragingConfig(seq_len=8, p_max=12)


def _decayed(decay_params: str) -> dict[str, bool]:
    params = nnx.state(GPT(TINY, rngs=nnx.Rngs(0)), nnx.Param)
    params = jax.tree.map(lambda p: p + 1.0, params)  # no zero parameter (LN biases start at 0)
    opt = make_optimizer(
        OptimConfig(name="adamw", lr=0.1, weight_decay=0.5, decay_params=decay_params), 10
    )
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero_grads, opt.init(params), params)
    return {
        jax.tree_util.keystr(path): bool(jnp.abs(u).max() > 0)
        for path, u in jax.tree_util.tree_leaves_with_path(updates)
    }


def test_weight_decay_mask_spares_norms_and_biases_only_when_asked():
    """With zero gradients an AdamW update is the decay alone: it touches every parameter by
    default (torch.optim.AdamW) and only >= 2-D ones with decay_params='matrices'."""
    every, matrices = _decayed("all"), _decayed("matrices")
    assert all(every.values())
    vectors = [k for k in matrices if "bias" in k or "scale" in k]
    assert vectors
    assert not any(matrices[k] for k in vectors)
    assert all(v for k, v in matrices.items() if "kernel" in k or "embedding" in k)
    with pytest.raises(ConfigError, match=r"optim\.decay_params"):
        OptimConfig(decay_params="some")


def test_train_step_and_optimizer_are_built_once_per_setting():
    cfg = OptimConfig(lr=1e-3)
    assert make_optimizer(cfg, 10) is make_optimizer(OptimConfig(lr=1e-3), 10)
    g1, _ = init_state(GPT(TINY, rngs=nnx.Rngs(0)), make_optimizer(cfg, 10), 0)
    g2, _ = init_state(GPT(TINY, rngs=nnx.Rngs(1)), make_optimizer(cfg, 10), 1)
    assert make_train_step(g1, make_optimizer(cfg, 10)) is make_train_step(
        g2, make_optimizer(cfg, 10)
    )


def test_train_result_model_holds_device_arrays_and_load_run_reads_the_folder(tmp_path):
    from sinks_jax.runs import load_run
    from sinks_jax.tasks.bigram_backcopy.data import batch_for_step, make_task
    from sinks_jax.train import train

    cfg = BBConfig(
        model=dataclasses.replace(TINY, vocab_size=22),
        data=BBDataConfig(seq_len=8, batch_size=4, table="synthetic", eval_batch_size=4),
        train=TrainConfig(steps=2, progress=False),
    )
    task = make_task(cfg.data, cfg.seed)
    result = train(
        cfg,
        lambda rngs: GPT(cfg.model, rngs=rngs),
        lambda step: batch_for_step(task, cfg.seed, step, 4, 8),
        out_dir=tmp_path / "run",
        eval_fn=lambda model, step: {"step_seen": step},
        eval_steps=[0, 2],
    )
    kernel = result.model().blocks[0].attn.query.kernel[...]
    assert isinstance(kernel, jax.Array)
    run = load_run(tmp_path / "run")  # the folder read back: config and the logged rows
    assert run.config["model"]["d_model"] == 16
    assert run.claims == []
    assert [r["step_seen"] for r in run.evals()] == [0, 2]


def test_apply_is_the_models_forward_pass_compiled():
    model = GPT(TINY, rngs=nnx.Rngs(2))
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, 11)
    options = {"capture": Capture(attention=True), "interventions": Interventions(zero_mlp=(1,))}
    jitted, eager = apply(model, tokens, **options), model(tokens, **options)
    np.testing.assert_allclose(jitted.logits, eager.logits, rtol=1e-5, atol=1e-6)  # fp32 fusion
    np.testing.assert_allclose(
        jitted.layers[1].attn_weights, eager.layers[1].attn_weights, rtol=1e-5, atol=1e-6
    )
    first_logit = jit_with_model(lambda m, t: m(t).logits[:, 0])
    np.testing.assert_allclose(first_logit(model, tokens), model(tokens).logits[:, 0], rtol=1e-5)


def test_importing_plotting_leaves_backend_and_style_alone():
    backend = matplotlib.get_backend()
    from sinks_jax import plotting

    assert matplotlib.get_backend() == backend
    assert matplotlib.rcParams["font.size"] == matplotlib.rcParamsDefault["font.size"]
    with plotting.style():
        assert matplotlib.rcParams["font.size"] == plotting.STYLE["font.size"]
    assert matplotlib.rcParams["font.size"] == matplotlib.rcParamsDefault["font.size"]


def test_builtin_corpus_skips_test_suites_but_keeps_unittest_and_doctest_docs():
    from sinks_jax.tasks.corpus.sources import is_test_suite

    kept = ["unittest/case.py", "doctest.py", "email/message.py", "contextlib.py"]
    skipped = ["test/test_os.py", "unittest/test/test_case.py", "idlelib/idle_test/x.py"]
    skipped += ["lib2to3/tests/data/a.py", "site-packages/pkg/mod.py", "ctypes/test_x.py"]
    assert not any(is_test_suite(p) for p in kept)
    assert all(is_test_suite(p) for p in skipped)
