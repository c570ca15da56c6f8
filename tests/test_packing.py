"""Packing for `experiments.packing_sweep` (issue 13 §5): BOS before every segment of
`bos_per_doc_masked`, EOS visibility of `no_bos` windows, the long-document corpus, the
query-restricted sink score and undefined claims. Tiny corpora, no training."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import packing_sweep as ps
from sinks_jax import claims
from sinks_jax.batch import Batch
from sinks_jax.errors import ConfigError, DataError
from sinks_jax.tasks import corpus
from sinks_jax.tasks.corpus import BOS, EOS, PAD


def _data(tmp_path, **kw) -> corpus.CorpusConfig:
    base = {  # the quick preset's document lengths and window, fewer documents
        "source": "synthetic_bb",
        "n_docs": 1500,
        "doc_len_min": 16,
        "doc_len_max": 80,
        "seq_len": 64,
        "batch_size": 256,
        "eval_batch_size": 8,
        "cache_dir": str(tmp_path / "cache"),
    }
    return corpus.CorpusConfig(**{**base, **kw})


def _batch(cfg, packing, step=0):
    store = corpus.build_store(cfg)
    return corpus.packed_batch(store, dataclasses.replace(cfg, packing=packing), 0, step)


def test_bos_per_doc_masked_starts_every_segment_with_bos(tmp_path):
    cfg = _data(tmp_path)
    for step in range(3):
        b = _batch(cfg, "bos_per_doc_masked", step)
        x, seg, pos = b.inputs, b.segment_ids, b.positions
        assert (x[:, 0] == BOS).all()
        starts = np.concatenate([np.ones((len(x), 1), bool), np.diff(seg, axis=1) != 0], axis=1)
        assert (x[starts] == BOS).all()
        assert (pos[starts] == 0).all()
        assert ps.fragment_share(b) == 0.0
        # no loss on the next document's BOS; elsewhere only a fragment's first target is masked
        np.testing.assert_array_equal((b.loss_mask == 0)[:, 1:], (b.targets == BOS)[:, 1:])
    # The causal packing keeps its leading fragments: the measure sees them (issue: ~42 %).
    assert ps.fragment_share(_batch(cfg, "bos_per_doc_causal")) > 0.25


def test_masked_fragment_is_the_window_shifted_behind_a_bos(tmp_path):
    cfg = _data(tmp_path)
    store = corpus.build_store(cfg)
    causal = corpus.pack_rows(
        store, "bos_per_doc_causal", "train", corpus.packing._rng(0, 5), 64, 64
    )
    masked = corpus.pack_rows(
        store, "bos_per_doc_masked", "train", corpus.packing._rng(0, 5), 64, 64
    )
    whole = causal.inputs[:, 0] == BOS  # same random offsets: rows at a boundary are unchanged
    np.testing.assert_array_equal(masked.inputs[whole], causal.inputs[whole])
    np.testing.assert_array_equal(masked.inputs[~whole, 1:], causal.inputs[~whole, :-1])
    # a fragment's first token is not predicted from its prepended BOS; a document start is
    assert (masked.loss_mask[~whole, 0] == 0).all()
    assert (masked.loss_mask[whole, 0] == (masked.targets[whole, 0] != BOS)).all()


def test_no_bos_eos_visibility_short_and_long_documents(tmp_path):
    short = _batch(_data(tmp_path), "no_bos")
    assert ps.window_share(short) > 0.85
    assert ps.eos_visible_share(short) > 0.4
    long_cfg = ps.long_doc_config(
        ps.PackingSweepConfig(data=_data(tmp_path, n_docs=400), model=ps.lm_presets.SMALL)
    )
    assert long_cfg.data.doc_len_min == 256
    assert long_cfg.data.packing == "no_bos"
    assert long_cfg.data.n_docs == round(400 * 48 / 288)  # as many corpus tokens
    long = _batch(long_cfg.data, "no_bos")
    assert ps.window_share(long) < 0.4
    assert ps.eos_visible_share(long) < 0.2


def test_eos_free_queries_and_uniform_baseline_by_hand():
    x = np.array([[5, 6, EOS, 7], [5, 6, 7, PAD]], np.int32)
    b = Batch(inputs=x, targets=x)
    free = ps.eos_free_queries(b)
    np.testing.assert_array_equal(free, [[1, 1, 0, 0], [1, 1, 1, 0]])
    assert ps.eos_visible_share(b) == pytest.approx(2 / 7)
    # Causal rows (no segment ids): query t sees t + 1 keys.
    assert ps.uniform_baseline(b, free) == pytest.approx(np.mean([1, 1 / 2, 1, 1 / 2, 1 / 3]))
    assert ps.fragment_share(b) == 1.0


def test_long_documents_filter_a_text_corpus(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i}.txt").write_text(("word " * (3 + 10 * (i % 4))).strip())
    data = _data(tmp_path, source="path", path=str(folder), seq_len=16, batch_size=4)
    cfg = ps.PackingSweepConfig(
        data=data,
        model=dataclasses.replace(ps.lm_presets.SMALL, max_len=16),
        sweep=ps.PackingSweep(long_doc_len_min=100),
    )
    c = ps.long_doc_config(cfg)
    store = ps.long_doc_store(cfg, c)
    lengths = np.diff(store.offsets)
    assert (lengths[store.train_docs] >= 100).all()
    assert (lengths[store.val_docs] >= 100).all()
    too_long = dataclasses.replace(
        cfg, sweep=ps.PackingSweep(long_doc_len_min=10_000, long_doc_len_max=10_000)
    )
    with pytest.raises(DataError, match="long_doc_len_min"):
        ps.long_doc_store(too_long, c)


def test_long_documents_must_fill_a_window(tmp_path):
    with pytest.raises(ConfigError, match="long_doc_len_min"):
        ps.PackingSweepConfig(
            data=_data(tmp_path),
            model=ps.lm_presets.SMALL,
            sweep=ps.PackingSweep(long_doc_len_min=64),
        )
    with pytest.raises(ConfigError, match="long_doc_len_max"):
        ps.PackingSweepConfig(
            data=_data(tmp_path),
            model=ps.lm_presets.SMALL,
            sweep=ps.PackingSweep(long_doc_len_max=100),
        )


def test_undefined_claims_are_counted_apart_and_plain_claims_unchanged():
    ok = claims.check("a", 0.7, ">=", 0.5)
    undefined = claims.check_if(False, "no clear sink", "b", 0.1, ">=", 0.5)
    tested = claims.check_if(True, "no clear sink", "c", 0.1, ">=", 0.5)
    assert tested == claims.check("c", 0.1, ">=", 0.5)
    assert undefined.passed is False
    assert undefined.undefined == "no clear sink"
    assert undefined.measured == 0.1
    cs = [ok, undefined, tested]
    assert sum(c.passed for c in cs) == 1  # the count in cli.py / experiments.all still works
    assert claims.counts(cs) == {"pass": 1, "fail": 1, "undefined": 1}
    as_json = json.loads(json.dumps(claims.to_jsonable(cs)))
    assert set(as_json[0]) == {"name", "paper_value", "measured", "threshold", "passed"}
    assert as_json[1]["undefined"] == "no clear sink"
    assert as_json[1]["passed"] is False
    table = claims.format_table(cs)
    assert "UNDEFINED" in table
    assert "PASS" in table
    assert "FAIL" in table
