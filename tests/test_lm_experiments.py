"""Small-GPT experiments (issue 8) at a tiny scale: a few dozen steps, asserting the mechanics
(configs, every output, the measurements' definitions), not the science."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import context_length_sweep as cls
from experiments import depth_sweep as ds
from experiments import lm_sinks
from experiments import packing_sweep as ps
from sinks_jax import metrics
from sinks_jax.batch import Batch
from sinks_jax.cli import RunContext, main
from sinks_jax.config import ModelConfig, TrainConfig
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT
from sinks_jax.tasks import corpus, lm

TINY_MODEL = ModelConfig(vocab_size=0, d_model=16, d_mlp=32, n_layers=1, n_heads=2, max_len=32)
TINY_TRAIN = TrainConfig(steps=12, eval_every=6, checkpoint_every=12, progress=False)


# a small synthetic Bigram-Backcopy corpus (with a `cache_dir`, a `CorpusConfig`)
TINY_DATA = {
    "source": "synthetic_bb",
    "n_docs": 80,
    "doc_len_min": 33,
    "doc_len_max": 60,
    "seq_len": 16,
    "batch_size": 8,
    "eval_batch_size": 8,
    "packing": "one_doc_per_row",
}


def _data(tmp_path, **kw):
    return corpus.CorpusConfig(**{**TINY_DATA, "cache_dir": str(tmp_path / "cache"), **kw})


def _ctx(tmp_path, name="out"):
    return RunContext(out_dir=tmp_path / name, preset="tiny", resume=False, pdf=False)


def test_key_scores_average_over_the_queries_that_see_each_key():
    att = jnp.asarray(np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None])[None, None]
    mask = jnp.asarray(np.tril(np.ones((3, 3), bool)))[None]
    scores = np.asarray(metrics.sink_scores(att, mask, per_sequence=True))[0, 0]
    np.testing.assert_allclose(scores, [(1 + 1 / 2 + 1 / 3) / 3, (1 / 2 + 1 / 3) / 2, 1 / 3])


def test_spearman_handles_ties_and_constants():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 2, 3], [1, 1, 2]) == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(metrics.spearman([1, 2, 3], [5, 5, 5]))


def test_token_classes_split_first_and_mid_window_bos():
    x = np.array([[corpus.BOS, 65, corpus.BOS, 10, 32, 33], [70, corpus.EOS, 71, 72, 73, 74]])
    c = lm.token_classes(x)
    assert c["BOS at position 0"].sum() == 1
    assert c["BOS mid-window"].sum() == 1
    assert c["first non-BOS token"][0, 1]
    assert c["first non-BOS token"][1, 0]
    assert c["EOS"].sum() == 1
    assert c["newline"].sum() == 1
    assert c["space"].sum() == 1
    assert "newline" not in lm.token_classes(x, byte_text=False)


def test_sink_summary_of_an_untrained_model_shows_no_sink(tmp_path):
    cfg = lm.LMConfig(model=TINY_MODEL, data=_data(tmp_path), train=TINY_TRAIN)
    store = corpus.build_store(cfg.data)
    batch = corpus.eval_rows(store, cfg.data, 0)
    model = GPT(cfg.model, rngs=nnx.Rngs(0))
    summary = lm.sink_summary(model, batch)
    assert 0.0 <= summary["max_head_score"] < 0.5
    assert summary["sink_rate_0.3"] == 0.0
    assert np.isfinite(summary["val_loss"])
    assert summary["val_loss"] > 0
    assert set(summary["class_scores_max"]) >= {"BOS", "EOS", "first non-BOS token"}


def test_lm_config_follows_the_tokenizer_and_checks_context(tmp_path):
    cfg = lm.LMConfig(model=TINY_MODEL, data=_data(tmp_path, tokenizer="bpe", bpe_vocab=300))
    assert cfg.model.vocab_size == corpus.VOCAB_SIZE + 300  # 0 = derived, resolved visibly
    with pytest.raises(ConfigError, match=r"model\.vocab_size"):  # an explicit mismatch is refused
        lm.LMConfig(
            model=dataclasses.replace(TINY_MODEL, vocab_size=corpus.VOCAB_SIZE),
            data=_data(tmp_path, tokenizer="bpe", bpe_vocab=300),
        )
    with pytest.raises(ConfigError, match="max_len"):
        lm.LMConfig(model=TINY_MODEL, data=_data(tmp_path, seq_len=64))


def test_lm_sinks_tiny_run_writes_claims_and_figures(tmp_path):
    cfg = lm.LMConfig(model=TINY_MODEL, data=_data(tmp_path), train=TINY_TRAIN)
    out = lm_sinks.run(cfg, _ctx(tmp_path))
    names = [c.name for c in out["claims"]]
    assert names == ["sink_rate_0.3_final", "sink_rate_0.3_at_step_0"]
    assert out["claims"][1].passed  # no sink at initialisation
    for f in ("sink_rate_over_training.png", "sink_heatmap.png", "attention_maps.png"):
        assert (tmp_path / "out" / f).exists()
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"][-1] == 12
    assert out["corpus"]["source"] == "synthetic_bb"


def test_context_sweep_reads_the_short_budget_from_the_long_runs(tmp_path):
    cfg = cls.ContextSweepConfig(
        model=TINY_MODEL,
        data=_data(tmp_path),
        train=dataclasses.replace(TINY_TRAIN, steps=6, eval_every=3),
        sweep=cls.ContextSweep(
            contexts=(8, 16), tokens_per_step=64, n_seeds=2, long_factor=2, long_seeds=1
        ),
    )
    c8 = cls.run_config(cfg, 8, cfg.seed)
    assert c8.data.batch_size == 8
    assert c8.data.seq_len == 8
    assert c8.train.steps == 12
    assert cls.run_config(cfg, 16, cfg.seed + 1).train.steps == 6
    out = cls.run(cfg, _ctx(tmp_path))
    budgets = sorted({(r["context"], r["seed"], r["budget"]) for r in out["runs"]})
    assert budgets == [(8, 0, 6), (8, 0, 12), (8, 1, 6), (16, 0, 6), (16, 0, 12), (16, 1, 6)]
    assert {"own_short", "common_short", "steps_to_sink", "own_long"} <= set(
        out["summary"]["spearman"]
    )
    assert len(out["claims"]) == 5
    for f in ("sink_vs_context.png", "sink_over_training.png", "steps_to_sink.png"):
        assert (tmp_path / "out" / f).exists()
    with pytest.raises(ConfigError, match="schedule"):
        dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, schedule="cosine"))


def test_depth_sweep_measures_mixing_with_and_without_bos(tmp_path):
    cfg = ds.DepthSweepConfig(
        model=TINY_MODEL,
        data=_data(tmp_path),
        train=TINY_TRAIN,
        sweep=ds.DepthSweep(depths=(1, 2), n_seeds=1, mixing_sequences=2, mixing_length=8),
    )
    assert ds.run_config(cfg, 2, 0).model.n_layers == 2
    store = corpus.build_store(cfg.data)
    with_bos, without = ds.mixing_inputs(store, 2, 8)
    assert with_bos.shape == (2, 8)
    assert without.shape == (2, 7)
    np.testing.assert_array_equal(with_bos[:, 1:], without)
    out = ds.run(cfg, _ctx(tmp_path))
    assert [r["depth"] for r in out["runs"]] == [1, 2]
    assert all(r["mixing_with_bos"] > 0 and 0 < r["mu_with_bos"] <= 1 for r in out["runs"])
    for f in ("sink_vs_depth.png", "sink_by_layer.png", "mixing_vs_depth.png"):
        assert (tmp_path / "out" / f).exists()


def test_packing_sweep_evaluates_every_strategy_in_every_format(tmp_path):
    cfg = ps.PackingSweepConfig(  # max_len == seq_len: a position past the window would be NaN
        model=dataclasses.replace(TINY_MODEL, max_len=16),
        data=_data(tmp_path, doc_len_min=10, doc_len_max=30),
        train=TINY_TRAIN,
        sweep=ps.PackingSweep(inference_rows=8, perturb_sequences=4),
    )
    out = ps.run(cfg, _ctx(tmp_path))
    assert [r["training packing"] for r in out["losses"]] == list(corpus.PACKINGS)
    for row in out["losses"]:
        assert all(np.isfinite(row[f]) for f in corpus.INFERENCE_FORMATS)
    assert len(out["claims"]) == 7
    spread = out["perturbation_spread"]
    # Changing a token never changes earlier positions (causality), so the curves start after it.
    assert np.asarray(spread["curve_with_bos"]).shape[1] == cfg.data.seq_len - 1 - 1 - (
        (cfg.data.seq_len - 1) // 2
    )
    for f in ("loss_table.png", "sink_locations.png", "perturbation_spread.png"):
        assert (tmp_path / "out" / f).exists()


def test_cli_reports_a_missing_corpus_in_one_line(tmp_path, capsys):
    code = main(
        lm_sinks.EXPERIMENT,
        [
            "--out",
            str(tmp_path / "o"),
            "--set",
            "data.source=path",
            "--set",
            f"data.path={tmp_path / 'nowhere'}",
        ],
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "does not exist" in err[0]


def test_depth_design_runs_both_corpora_and_counts_heads(tmp_path):
    from experiments import depth_design as dd

    cfg = dd.DepthDesignConfig(
        model=TINY_MODEL,
        data=_data(
            tmp_path, source="synthetic_khop", synthetic_vocab=8, n_triggers=1, doc_len_min=15,
            doc_len_max=15,
        ),
        bb_data=_data(tmp_path),
        train=TINY_TRAIN,
        sweep=dd.DepthDesign(
            depths=(1, 2), n_seeds=1, steps_per_layer=6, mixing_sequences=2, mixing_length=8
        ),
    )  # fmt: skip
    run_cfg = dd.run_config(cfg, "khop", 2, 0)
    assert (run_cfg.model.n_layers, run_cfg.data.n_triggers, run_cfg.train.steps) == (2, 2, 12)
    assert dd.run_config(cfg, "bb", 2, 0).data == cfg.bb_data
    out = dd.run(cfg, _ctx(tmp_path))
    assert [(r["corpus"], r["depth"]) for r in out["runs"]] == [
        ("khop", 1), ("khop", 2), ("bb", 1), ("bb", 2),
    ]  # fmt: skip
    for r in out["runs"]:
        heads = r["depth"] * TINY_MODEL.n_heads
        assert r["sink_heads"] + r["shrunk_heads"] + r["writing_heads"] == heads
        assert np.asarray(r["wov_norm"]).shape == (r["depth"], TINY_MODEL.n_heads)
    assert set(out["runs"][1]["trigger_accuracy"]) == {"hop_1", "hop_2"}
    assert len(out["claims"]) == 4
    assert set(out["spearman_depth_vs_sink_heads"]) == {"khop", "bb"}
    assert dd.eval_steps(6) == [0, 2, 3, 4, 6]  # quarters, rounded
    for f in ("sink_heads_vs_depth.png", "heads_by_kind.png"):
        assert (tmp_path / "out" / f).exists()
    with pytest.raises(ConfigError, match=r"data\.source"):
        dataclasses.replace(cfg, data=_data(tmp_path))


def test_text_sink_search_trains_each_candidate_and_checks_them_first(tmp_path):
    from experiments import text_sink_search as tss

    # Every listed candidate is a valid config of the cpu preset (no training).
    cpu = tss.PRESETS["cpu"]
    for name, overrides in tss.CANDIDATES.items():
        c = tss.candidate_config(cpu, name)
        assert c.data.tokenizer == ("bpe" if "data.tokenizer=bpe" in overrides else "bytes")
        assert c.data.seq_len * c.data.batch_size == 2048  # equal tokens per step
    cfg = tss.TextSearchConfig(
        model=TINY_MODEL,
        data=_data(tmp_path),
        train=TINY_TRAIN,
        sweep=tss.TextSearch(candidates=("bytes",)),
    )
    out = tss.run(cfg, _ctx(tmp_path))
    (row,) = out["runs"]
    assert (row["candidate"], row["steps"]) == ("bytes", 12)
    assert row["max first-position score at half"] is not None
    assert len(out["claims"]) == 1
    assert (tmp_path / "out" / "first_position_score.png").exists()
    with pytest.raises(ConfigError, match=r"sweep\.candidates"):
        tss.TextSearch(candidates=("bytes", "no_such_candidate"))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the SGD row diverges
def test_attention_variants_table_has_a_row_per_variant_and_optimiser(tmp_path):
    from experiments import attention_variants as av

    cfg = av.VariantsConfig(
        model=TINY_MODEL,
        data=_data(tmp_path),
        train=TINY_TRAIN,
        sweep=av.VariantSweep(
            variants=("softmax", "sink_logit", "sigmoid"), n_seeds=1, sgd_lr=1e9
        ),  # SGD at lr 1e9 diverges: its row records it and the table goes on
    )
    out = av.run(cfg, _ctx(tmp_path))
    (table,) = out["tables"].values()
    assert [(r["variant"], r["optimizer"]) for r in table] == [
        ("softmax", "adamw"), ("sink_logit", "adamw"), ("sigmoid", "adamw"), ("softmax", "sgd"),
    ]  # fmt: skip
    runs = {(r["variant"], r["optimizer"]): r for r in out["runs"]}
    assert runs[("sink_logit", "adamw")]["virtual_mass_max"] > 0  # the virtual key takes mass
    assert abs(runs[("softmax", "adamw")]["virtual_mass_max"]) < 1e-5
    assert table[0]["virtual-key mass (mean / max head)"] == "—"
    assert all(r["kurtosis"] > 0 for r in out["runs"] if r["optimizer"] == "adamw")
    assert runs[("softmax", "sgd")]["diverged"].startswith("loss became NaN")
    assert table[-1]["diverged"] == 1
    names = [c.name for c in out["claims"]]
    assert names[0].startswith("sigmoid: first-position sink rate")
    assert len(names) == 3  # sigmoid's sink rate, two loss ratios
    assert (tmp_path / "out" / "variants_table.png").exists()
    with pytest.raises(ConfigError, match=r"sweep\.variants"):
        av.VariantSweep(variants=("relu",))  # no baseline
    assert av.kurtosis(np.random.default_rng(0).normal(size=100_000)) == pytest.approx(3, abs=0.1)


def test_lm_phenomenology_measures_a_tiny_text_model(tmp_path):
    from experiments import lm_phenomenology as ph
    from sinks_jax.model import Capture

    x_BxT = np.array([[256, 97, 10, 98, 46, 99, 10, 100]])
    prev = ph.previous_position(x_BxT, (10,))
    assert prev.tolist() == [[-1, -1, -1, 2, 2, 2, 2, 6]]  # strictly before t
    rng = np.random.default_rng(0)
    words = ["sink", "head", "token", "the", "of", "a"]
    docs = [". ".join(" ".join(rng.choice(words, 5)) for _ in range(4)) + ".\n" for _ in range(120)]
    text = tmp_path / "docs.txt"
    text.write_text("\n\n\n".join(docs))
    data = _data(tmp_path, source="path", path=str(text), packing="bos_window_start")
    model_cfg = dataclasses.replace(TINY_MODEL, n_layers=2)
    sweep = ph.Phenomenology(split_ranks=(1, 4))  # two budgets keep the test short
    cfg = ph.PhenomenologyConfig(model=model_cfg, data=data, train=TINY_TRAIN, sweep=sweep)
    out = ph.run(cfg, _ctx(tmp_path))
    assert len(out["claims"]) == 2
    assert {r["rank"] for r in out["low_rank"]} == {1, 2, 4, 8}
    split = {(r["budget per head"], r["method"]) for r in out["low_rank_sparse_split"]}
    assert len(split) == 2 + 3  # no r/2 split at rank 1
    assert np.asarray(out["active_dormant"]["row_mass_max"]).shape == (2, 2)
    for f in ("delimiter_sinks.png", "active_dormant_head.png", "low_rank_qk.png"):
        assert (tmp_path / "out" / f).exists()
    # The tag share: one common vector is all uncentred; noise along one axis is all centred.
    common_NxD = np.tile(rng.normal(size=(1, 8)), (20, 1))
    assert ph.top_share(common_NxD, centred=False)[0] == pytest.approx(1.0)
    axis_NxD = rng.normal(size=(20, 1)) * np.eye(8)[3] + common_NxD
    assert ph.top_share(axis_NxD)[0] == pytest.approx(1.0)
    # Release: logits = tag of the key + any per-query offset correlate perfectly.
    tau_BxT = rng.normal(size=(2, 6))
    logits_BxHxTxS = (tau_BxT[:, None, None, :] + rng.normal(size=(2, 1, 6, 1))).repeat(2, 1)
    logits_BxHxTxS[:, 1] = rng.normal(size=(2, 6, 6))
    corr = ph.release_correlation(logits_BxHxTxS, tau_BxT, np.ones((2, 6), bool))
    assert corr[0] == pytest.approx(1.0)
    assert abs(corr[1]) < 0.9
    # Rank d_head reproduces the model's attention (the query bias folded in, the key bias
    # dropped: it shifts each query's logits by one constant); rank 1 changes it.
    model = GPT(dataclasses.replace(model_cfg, vocab_size=259), rngs=nnx.Rngs(0))
    for block in model.blocks:
        for lin in (block.attn.query, block.attn.key):
            lin.bias.set_value(jnp.asarray(rng.normal(size=lin.bias.shape), jnp.float32))
    tokens = rng.integers(0, 256, (2, 17))
    batch = Batch(inputs=tokens[:, :-1], targets=tokens[:, 1:])
    full = lm.forward(model, batch, Capture(attention=True))
    same = lm.forward(ph.with_qk_rank(model, model.cfg.d_head), batch, Capture(attention=True))
    for a, b in zip(full.layers, same.layers, strict=True):
        np.testing.assert_allclose(a.attn_weights, b.attn_weights, atol=1e-5)
        shift_BxHxTx1 = (a.attn_logits - b.attn_logits)[..., :1]
        np.testing.assert_allclose(a.attn_logits - b.attn_logits, np.broadcast_to(
            shift_BxHxTx1, a.attn_logits.shape), atol=1e-4)  # fmt: skip
    one = lm.forward(ph.with_qk_rank(model, 1), batch, Capture(attention=True))
    assert not np.allclose(full.layers[0].attn_logits, one.layers[0].attn_logits, atol=1e-4)
    # Forms patched in layer by layer: the model's own forms reproduce it, rank-1 forms reproduce
    # the refactored rank-1 model (float32 logits: 1e-4).
    forms = ph.qk_forms(model)
    assert forms[0].shape == (2, 17, 17)
    patched = ph.forward_with_forms(model, batch, forms, Capture(attention=True))
    np.testing.assert_allclose(patched.logits, full.logits, atol=1e-4)
    for a, b in zip(same.layers, patched.layers, strict=True):
        np.testing.assert_allclose(a.attn_logits, b.attn_logits, atol=1e-4)
    rank1 = {l: np.stack([ph.low_rank_plus_sparse(f, 1, 0) for f in fs]) for l, fs in forms.items()}
    patched = ph.forward_with_forms(model, batch, rank1, Capture(attention=True))
    for a, b in zip(one.layers, patched.layers, strict=True):
        np.testing.assert_allclose(a.attn_logits, b.attn_logits, atol=1e-4)
    # Rank 0 + k sparse keeps exactly the k largest entries; full rank + 0 is the form itself.
    form = rng.normal(size=(5, 5))
    kept = ph.low_rank_plus_sparse(form, 0, 3)
    assert np.count_nonzero(kept) == 3
    assert set(np.abs(kept[kept != 0])) == set(np.sort(np.abs(form).ravel())[-3:])
    np.testing.assert_allclose(ph.low_rank_plus_sparse(form, 5, 0), form, atol=1e-12)
    # Sun et al.'s patch replaces only the entries above the threshold in the chosen dims.
    edit = ph.MeanPatch(layers=(0,), dims=(1,), threshold=1.0, mean_D=jnp.full(3, 7.0))
    x = jnp.array([[[5.0, 5.0, 5.0], [0.5, 0.5, 0.5]]])
    np.testing.assert_array_equal(edit(x, 0), [[[5.0, 7.0, 5.0], [0.5, 0.5, 0.5]]])
