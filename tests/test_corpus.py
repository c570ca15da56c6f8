"""Corpus pipeline: sources, tokenizers, the cached token store, packing invariants, errors."""

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks_jax import run_dir
from sinks_jax.errors import ConfigError, DataError
from sinks_jax.tasks import corpus
from sinks_jax.tasks.corpus import BOS, EOS, PAD

TEXTS = [
    "The first document.\nIt has two lines.",
    "Zweites Dokument: ünïcödé bytes, and punctuation!",
    "A third one, " * 12,
    "Short four.",
    "The fifth document is a little longer than the others " * 3,
]


@pytest.fixture
def text_folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, t in enumerate(TEXTS):
        (folder / f"{i}.txt").write_text(t, encoding="utf-8")
    return folder


def _cfg(tmp_path, **kw) -> corpus.CorpusConfig:
    base = {
        "source": "synthetic_bb",
        "n_docs": 60,
        "doc_len_min": 8,
        "doc_len_max": 40,
        "seq_len": 32,
        "batch_size": 16,
        "eval_batch_size": 8,
        "cache_dir": str(tmp_path / "cache"),
    }
    return corpus.CorpusConfig(**{**base, **kw})


@pytest.mark.parametrize("source", ["folder", "txt", "jsonl"])
def test_path_sources_round_trip_through_the_byte_tokenizer(tmp_path, text_folder, source):
    if source == "folder":
        path = text_folder
    elif source == "txt":
        path = tmp_path / "all.txt"
        path.write_text("\n\n\n".join(TEXTS), encoding="utf-8")
    else:
        path = tmp_path / "all.jsonl"
        path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS), encoding="utf-8")
    cfg = _cfg(tmp_path, source="path", path=str(path))
    store = corpus.build_store(cfg)
    assert store.tokens.dtype == np.uint16
    assert store.info["n_docs"] == len(TEXTS)
    decoded = sorted(corpus.decode(store.doc(i), cfg) for i in range(len(TEXTS)))
    assert decoded == sorted(TEXTS)
    assert len(store.val_docs) >= 1
    assert len(store.train_docs) >= 1
    assert not set(store.val_docs) & set(store.train_docs)


def test_store_is_cached_on_disk_and_read_as_a_memmap(tmp_path):
    cfg = _cfg(tmp_path)
    first = corpus.build_store(cfg)
    assert isinstance(first.tokens, np.memmap)
    again = corpus.build_store(cfg)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert first.info["content_hash"] == again.info["content_hash"]
    other = corpus.build_store(dataclasses.replace(cfg, n_docs=61))
    assert other.info["content_hash"] != first.info["content_hash"]


def test_builtin_corpus_records_its_provenance():
    docs = corpus.builtin_documents()
    assert len(docs) > 1000
    assert all(len(d) > 0 for d in docs[:100])
    assert sum(len(d) for d in docs) > 1_000_000


def test_bpe_tokenizer_round_trips_and_keeps_the_special_ids(tmp_path, text_folder):
    pytest.importorskip("tokenizers")
    cfg = _cfg(tmp_path, source="path", path=str(text_folder), tokenizer="bpe", bpe_vocab=300)
    store = corpus.build_store(cfg)
    assert store.tokens.min() >= corpus.VOCAB_SIZE  # BOS/EOS/PAD ids stay free
    assert corpus.vocab_size(cfg) == corpus.VOCAB_SIZE + 300
    assert sorted(corpus.decode(store.doc(i), cfg, store) for i in range(len(TEXTS))) == sorted(
        TEXTS
    )


def _batch(tmp_path, packing, step=0, seed=0):
    cfg = _cfg(tmp_path, packing=packing)
    store = corpus.build_store(cfg)
    return corpus.packed_batch(store, cfg, seed, step), cfg


@pytest.mark.parametrize("packing", corpus.PACKINGS)
def test_every_packing_is_deterministic_and_shifts_targets(tmp_path, packing):
    a, cfg = _batch(tmp_path, packing, step=3)
    b, _ = _batch(tmp_path, packing, step=3)
    c, _ = _batch(tmp_path, packing, step=4)
    for x, y in zip(
        (a.inputs, a.targets, a.loss_mask), (b.inputs, b.targets, b.loss_mask), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.inputs, c.inputs)
    assert a.inputs.shape == (cfg.batch_size, cfg.seq_len) == a.targets.shape
    np.testing.assert_array_equal(a.inputs[:, 1:], a.targets[:, :-1])
    assert a.inputs.max() < corpus.VOCAB_SIZE


def test_bos_per_doc_causal_packs_documents_across_boundaries(tmp_path):
    b, _ = _batch(tmp_path, "bos_per_doc_causal")
    assert b.segment_ids is None
    assert b.positions is None
    assert (b.inputs[:, 1:] == BOS).any()  # BOS tokens mid-window
    assert not (b.inputs == EOS).any()
    assert not (b.inputs == PAD).any()
    assert b.loss_mask.min() == 1.0


def test_bos_per_doc_masked_restarts_segments_and_positions_at_bos(tmp_path):
    b, _ = _batch(tmp_path, "bos_per_doc_masked")
    seg, pos, x = b.segment_ids, b.positions, b.inputs
    new_doc = x[:, 1:] == BOS
    np.testing.assert_array_equal(np.diff(seg, axis=1), new_doc.astype(int))
    assert (pos[x == BOS] == 0).all()
    assert pos[:, 0].max() == 0
    assert pos.max() < x.shape[1]
    same = ~new_doc
    np.testing.assert_array_equal(np.diff(pos, axis=1)[same], 1)
    # The next document's BOS is never a target (column 0 may also be a fragment's first token
    # after its prepended BOS, which is not a target either: tests/test_packing.py).
    np.testing.assert_array_equal((b.loss_mask == 0)[:, 1:], (b.targets == BOS)[:, 1:])


def test_window_packings_place_bos_only_at_the_start(tmp_path):
    with_bos, _ = _batch(tmp_path, "bos_window_start")
    assert (with_bos.inputs[:, 0] == BOS).all()
    assert not (with_bos.inputs[:, 1:] == BOS).any()
    assert (with_bos.inputs == EOS).any()
    without, _ = _batch(tmp_path, "no_bos")
    assert not (without.inputs == BOS).any()
    assert (without.inputs == EOS).any()
    assert without.segment_ids is None


def test_one_doc_per_row_pads_and_masks_after_the_document(tmp_path):
    b, _ = _batch(tmp_path, "one_doc_per_row")
    assert (b.inputs[:, 0] == BOS).all()
    np.testing.assert_array_equal(b.loss_mask, (b.targets != PAD).astype(np.float32))
    np.testing.assert_array_equal(b.segment_ids, (b.inputs != PAD).astype(np.int32))
    short = (b.inputs == PAD).any(1)
    assert short.any()
    assert ((b.targets == EOS).sum(1)[short] == 1).all()


def test_inference_formats_score_the_same_tokens(tmp_path):
    cfg = _cfg(tmp_path)
    store = corpus.build_store(cfg)
    with_bos = corpus.inference_rows(store, "bos_doc_start", 8, 16)
    without = corpus.inference_rows(store, "doc_start_no_bos", 8, 16)
    mid = corpus.inference_rows(store, "mid_doc_no_bos", 8, 16)
    assert (with_bos.inputs[:, 0] == BOS).all()
    assert not (without.inputs == BOS).any()
    assert not (mid.inputs == BOS).any()
    scored_with = with_bos.targets[:, 1:][with_bos.loss_mask[:, 1:] > 0]
    scored_without = without.targets[:, :-1][without.loss_mask[:, :-1] > 0]
    np.testing.assert_array_equal(scored_with, scored_without)
    with pytest.raises(DataError, match="inference format"):
        corpus.inference_rows(store, "nope", 2, 8)


def test_bad_corpora_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        corpus.build_store(_cfg(tmp_path, source="path", path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.txt files"):
        corpus.build_store(_cfg(tmp_path, source="path", path=str(tmp_path / "empty")))
    blank = tmp_path / "blank.txt"
    blank.write_text("   \n")
    with pytest.raises(DataError, match="no non-empty documents"):
        corpus.build_store(_cfg(tmp_path, source="path", path=str(blank)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        corpus.build_store(_cfg(tmp_path, source="path", path=str(bad)))
    one = tmp_path / "one.txt"
    one.write_text("a single document")
    with pytest.raises(DataError, match="at least 2"):
        corpus.build_store(_cfg(tmp_path, source="path", path=str(one)))
    with pytest.raises(DataError, match=r"data\.path"):
        corpus.build_store(_cfg(tmp_path, source="path"))
    with pytest.raises(ConfigError, match=r"data\.packing"):
        _cfg(tmp_path, packing="random")
    tiny = _cfg(tmp_path, n_docs=4, doc_len_min=4, doc_len_max=4, seq_len=64)
    store = corpus.build_store(tiny)
    with pytest.raises(DataError, match="fewer than one window"):
        corpus.packed_batch(store, dataclasses.replace(tiny, packing="no_bos"), 0, 0)


@pytest.mark.parametrize(
    "kw",
    [{}, {"per_doc_table": True}, {"source": "synthetic_markov"}],
    ids=["bb_shared_table", "bb_per_doc_table", "markov"],
)
def test_synthetic_documents_respect_lengths_and_vocabulary(tmp_path, kw):
    cfg = _cfg(tmp_path, synthetic_vocab=12, **kw)
    docs = corpus.synthetic_documents(cfg, seed=0)
    lengths = np.array([len(d) for d in docs])
    assert len(docs) == cfg.n_docs
    assert lengths.min() >= cfg.doc_len_min
    assert lengths.max() <= cfg.doc_len_max
    vocab = 67 if not kw else cfg.synthetic_vocab  # the Shakespeare table has 67 ids
    assert max(d.max() for d in docs) < vocab
    np.testing.assert_array_equal(docs[3], corpus.synthetic_documents(cfg, seed=0)[3])


def test_synthetic_bb_documents_copy_after_triggers(tmp_path):
    from sinks_jax.tasks.bigram_backcopy.data import load_shakespeare_table

    cfg = _cfg(tmp_path)
    triggers = load_shakespeare_table(cfg.n_triggers).trigger_mask
    docs = corpus.synthetic_documents(cfg, seed=1)
    copies = [(d[t], d[t - 2]) for d in docs for t in range(2, len(d)) if triggers[d[t - 1]]]
    assert len(copies) > 100
    assert all(a == b for a, b in copies)
    assert not any(triggers[d[0]] for d in docs)  # the first token is never a trigger


# ---------------------------------------------------------------------------------------------
# Runs that lose nothing: a damaged token cache is rebuilt, bad input is one DataError line.


def _damage(cache, how):
    if how == "truncated_offsets":
        data = (cache / "offsets.npy").read_bytes()
        (cache / "offsets.npy").write_bytes(data[: len(data) // 2])
    elif how == "truncated_tokens":
        data = (cache / "tokens.npy").read_bytes()
        (cache / "tokens.npy").write_bytes(data[: len(data) - 7])
    elif how == "missing_manifest":
        (cache / "manifest.json").unlink(missing_ok=True)
    elif how == "garbled_manifest":
        (cache / "manifest.json").write_text("{not json")
    elif how == "garbled_npy_header":  # same size, header bytes overwritten
        data = bytearray((cache / "tokens.npy").read_bytes())
        data[10:20] = b"xxxxxxxxxx"
        (cache / "tokens.npy").write_bytes(bytes(data))
    elif how == "offsets_past_the_end":  # a well-formed .npy whose offsets overrun the tokens
        offsets = np.load(cache / "offsets.npy")
        offsets[-1] += 5
        np.save(cache / "offsets.npy", offsets)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated_offsets",
        "truncated_tokens",
        "missing_manifest",
        "garbled_manifest",
        "garbled_npy_header",
        "offsets_past_the_end",
    ],
)
def test_a_damaged_token_cache_is_rebuilt(tmp_path, capsys, how):
    cfg = _cfg(tmp_path)
    first = corpus.build_store(cfg)
    tokens, offsets = np.array(first.tokens), np.array(first.offsets)
    cache = Path(first.info["cache"])
    assert capsys.readouterr().out == ""  # a fresh build says nothing
    _damage(cache, how)
    again = corpus.build_store(cfg)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"[sinks_jax] corpus cache {cache} ")
    assert "incomplete or damaged" in out[0]
    assert out[0].endswith("); rebuilding")
    np.testing.assert_array_equal(again.tokens, tokens)
    np.testing.assert_array_equal(again.offsets, offsets)
    assert json.loads((cache / "manifest.json").read_text())["n_tokens"] == len(tokens)
    corpus.build_store(cfg)  # now sound: loaded silently
    assert capsys.readouterr().out == ""
    assert not [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_bpe_json_is_retrained(tmp_path, capsys, text_folder):
    pytest.importorskip("tokenizers")
    cfg = _cfg(tmp_path, source="path", path=str(text_folder), tokenizer="bpe", bpe_vocab=300)
    first = corpus.build_store(cfg)
    cache = Path(first.info["cache"])
    capsys.readouterr()
    (cache / "bpe.json").write_text('{"version": "1.0", "trunc')
    store = corpus.build_store(cfg)
    out = capsys.readouterr().out
    assert "bpe.json" in out
    assert out.strip().endswith("rebuilding")
    decoded = sorted(corpus.decode(store.doc(i), cfg, store) for i in range(len(TEXTS)))
    assert decoded == sorted(TEXTS)


def test_cache_files_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "a.npy"
    corpus.store._atomic_save_npy(target, np.arange(5, dtype=np.uint16))

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_dir.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left on device"):
        corpus.store._atomic_save_npy(target, np.arange(9, dtype=np.uint16))
    np.testing.assert_array_equal(np.load(target), np.arange(5))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]  # no temp file left behind


def test_an_unwritable_cache_dir_is_a_data_error(tmp_path):
    (tmp_path / "a_file").write_text("x")
    cfg = _cfg(tmp_path, cache_dir=str(tmp_path / "a_file" / "cache"))
    with pytest.raises(DataError, match="cannot write the corpus cache") as err:
        corpus.build_store(cfg)
    assert "\n" not in str(err.value)


def _one_line_data_error(cfg, match):
    with pytest.raises(DataError, match=match) as err:
        corpus.build_store(cfg)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    "line",
    [
        b'{"text": null}',
        b'{"text": 42}',
        b'{"text": ["a", "list"]}',
        b'["not", "an", "object"]',
        b'"just a string"',
        b'{"text": "bad \xff\xfe bytes"}',
        b'{"text": "a lone surrogate \\ud800"}',
        b"[" * 100_000,
    ],
    ids=[
        "null",
        "number",
        "list",
        "array_line",
        "string_line",
        "invalid_utf8",
        "surrogate",
        "deeply_nested",
    ],
)
def test_bad_jsonl_records_are_one_line_data_errors(tmp_path, line):
    bad = tmp_path / "records.jsonl"
    bad.write_bytes(b'{"text": "a fine first document"}\n' + line + b'\n{"text": "third"}\n')
    _one_line_data_error(_cfg(tmp_path, source="path", path=str(bad)), r"records\.jsonl:2\b")


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    texts = ["one\u2028line\u2029with separators\x85", "two", "three \x1c four"]
    path = tmp_path / "sep.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), encoding="utf-8"
    )
    cfg = _cfg(tmp_path, source="path", path=str(path))
    store = corpus.build_store(cfg)
    assert sorted(corpus.decode(store.doc(i), cfg) for i in range(3)) == sorted(texts)


def test_invalid_utf8_text_is_a_data_error_naming_the_file(tmp_path, text_folder):
    txt = tmp_path / "latin1.txt"
    raw = "first document\n\n\nsecond: caf\xe9".encode("latin-1")
    txt.write_bytes(raw)
    msg = _one_line_data_error(_cfg(tmp_path, source="path", path=str(txt)), "UTF-8")
    assert str(txt) in msg
    assert f"byte {raw.index(0xE9)}" in msg
    (text_folder / "3.txt").write_bytes(b"an ok start, then \xc3\x28")
    msg = _one_line_data_error(_cfg(tmp_path, source="path", path=str(text_folder)), "UTF-8")
    assert str(text_folder / "3.txt") in msg


@pytest.mark.parametrize(
    "payload",
    [
        bytes(range(256)) * 100,
        b"\x00\x00MZ" + b"text " * 50,
        ("\x01\x02\x03\x04 abc" * 40).encode(),
    ],
    ids=["all_bytes", "nul", "control_chars"],
)
@pytest.mark.parametrize("kind", ["txt", "folder", "jsonl"])
def test_binary_input_is_rejected(tmp_path, payload, kind):
    if kind == "folder":
        folder = tmp_path / "docs"
        folder.mkdir()
        (folder / "0.txt").write_text("a real document\n")
        path = folder / "1.txt"
        target = folder
    else:
        path = target = tmp_path / f"blob.{kind}"
    path.write_bytes(payload)
    cfg = _cfg(tmp_path, source="path", path=str(target))
    msg = _one_line_data_error(cfg, "looks like a binary file, not text")
    assert str(path) in msg


def test_text_with_a_few_control_characters_is_accepted(tmp_path):
    texts = ["page one\fpage two\twith a tab", "line\r\nending", "plain " * 30 + "\x1b[1mbold"]
    path = tmp_path / "ok.txt"
    path.write_bytes("\n\n\n".join(texts).encode())
    cfg = _cfg(tmp_path, source="path", path=str(path))
    store = corpus.build_store(cfg)
    expected = [t.replace("\r\n", "\n") for t in texts]  # universal newlines, as before
    assert sorted(corpus.decode(store.doc(i), cfg) for i in range(3)) == sorted(expected)


def test_an_unreadable_corpus_file_is_a_data_error(tmp_path, text_folder, monkeypatch):
    locked = text_folder / "2.txt"
    real_read_bytes, real_read_text = Path.read_bytes, Path.read_text

    def denied(real):
        def read(self, *args, **kw):
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kw)

        return read

    monkeypatch.setattr(Path, "read_bytes", denied(real_read_bytes))
    monkeypatch.setattr(Path, "read_text", denied(real_read_text))
    msg = _one_line_data_error(
        _cfg(tmp_path, source="path", path=str(text_folder)), "Permission denied"
    )
    assert str(locked) in msg


def test_data_path_needs_source_path(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path='corpus\.txt'.*data\.source") as err:
        _cfg(tmp_path, path="corpus.txt")
    assert "synthetic_bb" in str(err.value)
    assert "data.source=path" in str(err.value)
    cfg = _cfg(tmp_path, source="path", path="corpus.txt")  # fine together
    with pytest.raises(ConfigError, match=r"data\.path"):
        dataclasses.replace(cfg, source="builtin")
    assert dataclasses.replace(cfg, source="builtin", path="").source == "builtin"


_SEP = b"\n\n\n"


def _expected_docs(raw: bytes) -> list[str]:
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    return sorted(d for d in text.split(_SEP.decode()) if d.strip())


@settings(max_examples=25, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.binary(max_size=40), max_size=5).map(_SEP.join),
        st.lists(st.text(max_size=40), min_size=2, max_size=5).map(
            lambda ts: _SEP.join(t.encode("utf-8") for t in ts)
        ),
    )
)
def test_any_bytes_as_a_txt_corpus_build_exactly_or_raise_data_error(raw):
    root = Path(tempfile.mkdtemp(prefix="sinks_corpus_"))
    try:
        path = root / "corpus.txt"
        path.write_bytes(raw)
        cfg = _cfg(root, source="path", path=str(path))
        try:
            store = corpus.build_store(cfg)
        except DataError as e:
            # raising is allowed, not required (a property test), so pytest.raises cannot say it
            assert "\n" not in str(e)  # noqa: PT017
            return
        # Built: nothing altered, every document exactly the file's UTF-8 text.
        n = store.info["n_docs"]
        assert sorted(corpus.decode(store.doc(i), cfg) for i in range(n)) == _expected_docs(raw)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=30), min_size=1, max_size=4))
def test_any_bytes_as_jsonl_lines_build_or_raise_data_error(lines):
    root = Path(tempfile.mkdtemp(prefix="sinks_corpus_"))
    try:
        path = root / "corpus.jsonl"
        good = [json.dumps({"text": f"document {i}"}).encode() for i in range(2)]
        path.write_bytes(b"\n".join(good + [ln.replace(b"\n", b" ") for ln in lines]))
        try:
            corpus.build_store(_cfg(root, source="path", path=str(path)))
        except DataError as e:
            # raising is allowed, not required (a property test), so pytest.raises cannot say it
            assert "\n" not in str(e)  # noqa: PT017
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# k-hop back-copy documents (the depth design).


def _naive_target(doc: list[int], trigger_pos: int, hops: int, vocab: int) -> int | None:
    """The k-hop target by its definition, with plain loops: walk back from the trigger over
    k − 1 earlier triggers (ids >= vocab) and take the token before the one reached."""
    pos = trigger_pos
    for _ in range(hops - 1):
        earlier = [j for j in range(pos) if doc[j] >= vocab]
        if not earlier:
            return None
        pos = earlier[-1]
    return doc[pos - 1]


@settings(max_examples=200, deadline=None)
@given(
    doc=st.lists(st.integers(0, 5), min_size=3, max_size=30),
    data=st.data(),
    hops=st.integers(1, 4),
)
def test_khop_target_follows_its_definition(doc, data, hops):
    doc = [doc[0] % 4, *doc[1:]]  # a trigger never stands first
    doc = [d if d < 4 or doc[i - 1] < 4 else 0 for i, d in enumerate(doc)]  # nor after a trigger
    pos = data.draw(st.integers(1, len(doc) - 1))
    doc[pos] = 4  # a trigger at pos
    if doc[pos - 1] >= 4:
        doc[pos - 1] = 1
    is_filler = np.arange(6) < 4  # ids 4 and 5 play triggers
    got = corpus.khop_target(np.array(doc), pos, hops, is_filler)
    assert got == _naive_target(doc, pos, hops, 4)


def test_khop_documents_follow_the_rule_after_every_trigger(tmp_path):
    cfg = _cfg(
        tmp_path, source="synthetic_khop", synthetic_vocab=8, n_triggers=3, n_docs=300,
        doc_len_min=40, doc_len_max=60,
    )  # fmt: skip
    docs = corpus.khop_documents(cfg, seed=0)
    assert {len(d) for d in docs} <= set(range(40, 61))
    per_class = np.zeros(4, int)
    for d in docs:
        assert d.max() < 8 + 3
        for t in np.flatnonzero(d[:-1] >= 8):
            k = int(d[t]) - 8 + 1
            assert t >= 2
            assert (d[t - 2 : t] < 8).all()  # two filler tokens before every trigger
            target = _naive_target(list(d), t, k, 8)
            assert target is not None  # every class-k trigger has k - 1 triggers before it
            assert d[t + 1] == target
            per_class[k] += 1
    assert per_class[1:].min() > 50  # every class occurs
    np.testing.assert_array_equal(docs[5], corpus.khop_documents(cfg, seed=0)[5])
    with_trigger = next(d for d in docs if (d == 8).any())
    assert "T1" in corpus.decode(with_trigger, cfg).split()
    store = corpus.build_store(cfg)  # cached like any synthetic corpus
    np.testing.assert_array_equal(store.doc(0), docs[0])


def test_khop_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.n_triggers"):
        _cfg(tmp_path, source="synthetic_khop", synthetic_vocab=250, n_triggers=7)
    with pytest.raises(ConfigError, match=r"data\.trigger_rate"):
        _cfg(tmp_path, source="synthetic_khop", trigger_rate=1.0)
