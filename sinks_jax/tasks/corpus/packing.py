"""Packing strategies: where BOS, EOS and document boundaries sit in a training window, and
the inference formats."""

from __future__ import annotations

import numpy as np

from sinks_jax.batch import Batch
from sinks_jax.errors import DataError
from sinks_jax.tasks.corpus.config import (
    BOS,
    EOS,
    PAD,
    CorpusConfig,
)
from sinks_jax.tasks.corpus.store import (
    TokenStore,
)


def _rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, stream])


def _windows(stream: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    return stream[starts[:, None] + np.arange(length)[None, :]].astype(np.int64)


def _bos_before_fragment(toks_NxL: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that start inside a document get BOS prepended (and lose their last token), so
    that no segment of a `bos_per_doc_masked` window lacks its BOS; also which rows those are."""
    fragment_N = toks_NxL[:, 0] != BOS
    out = toks_NxL.copy()
    out[fragment_N] = np.concatenate(
        [np.full((int(fragment_N.sum()), 1), BOS, toks_NxL.dtype), toks_NxL[fragment_N, :-1]],
        axis=1,
    )
    return out, fragment_N


def pack_rows(store: TokenStore, packing: str, split: str, rng, n: int, seq_len: int) -> Batch:
    """`n` rows of `seq_len` inputs (and next-token targets) under `packing` (module docstring of
    `PACKINGS`). Segment ids count documents within a row from 1 (0 = padding)."""
    docs = store.train_docs if split == "train" else store.val_docs
    length = seq_len + 1
    pos = np.broadcast_to(np.arange(length), (n, length)).copy()
    segs = np.ones((n, length), np.int64)
    if packing in ("bos_per_doc_causal", "bos_per_doc_masked", "bos_window_start", "no_bos"):
        separator = "bos" if packing.startswith("bos_per_doc") else "eos"
        stream = store.stream(split, separator)
        take = length - (packing == "bos_window_start")
        if len(stream) <= take:
            raise DataError(
                f"the {split} split has {len(stream)} tokens, fewer than one window ({take}); "
                "use a shorter data.seq_len or a larger corpus"
            )
        starts = rng.integers(0, len(stream) - take, n)
        toks = _windows(stream, starts, take)
        if packing == "bos_window_start":
            toks = np.concatenate([np.full((n, 1), BOS), toks], axis=1)
        if packing == "bos_per_doc_masked":
            toks, fragment_N = _bos_before_fragment(toks)
        if separator == "bos":  # a new segment at every BOS; a leading partial document is 1
            segs = np.cumsum(toks == BOS, axis=1) + (toks[:, :1] != BOS)
            if packing == "bos_per_doc_masked":  # positions count from each segment's start
                col = np.broadcast_to(np.arange(length), (n, length))
                seg_start = np.maximum.accumulate(np.where(toks == BOS, col, 0), axis=1)
                pos = col - seg_start
    else:  # one_doc_per_row
        toks = np.full((n, length), PAD, np.int64)
        for r in range(n):
            d = np.concatenate([[BOS], store.doc(int(rng.choice(docs))), [EOS]])[:length]
            toks[r, : len(d)] = d
            segs[r, len(d) :] = 0
    inputs, targets = toks[:, :-1], toks[:, 1:]
    loss_mask = np.ones_like(inputs, np.float32)
    seg_in, seg_out = segs[:, :-1], segs[:, 1:]
    if packing == "bos_per_doc_masked":
        loss_mask = (seg_in == seg_out).astype(np.float32)  # don't predict the next document's BOS
        loss_mask[fragment_N, 0] = 0.0  # nor a fragment's first token from its prepended BOS
    if packing == "one_doc_per_row":
        loss_mask = (seg_out > 0).astype(np.float32)
    masked = packing in ("bos_per_doc_masked", "one_doc_per_row")
    return Batch(
        inputs=inputs.astype(np.int32),
        targets=targets.astype(np.int32),
        loss_mask=loss_mask,
        segment_ids=seg_in.astype(np.int32) if masked else None,
        positions=pos[:, :-1].astype(np.int32) if packing == "bos_per_doc_masked" else None,
    )


def packed_batch(store: TokenStore, cfg: CorpusConfig, seed: int, step: int) -> Batch:
    """The training batch of `step` (pure function of (seed, step))."""
    return pack_rows(store, cfg.packing, "train", _rng(seed, step), cfg.batch_size, cfg.seq_len)


def eval_rows(
    store: TokenStore,
    cfg: CorpusConfig,
    seed: int,
    packing: str | None = None,
    seq_len: int | None = None,
) -> Batch:
    """A fixed validation batch under `packing` (default: the training packing) and `seq_len`
    (default: the training context)."""
    rng = _rng(seed, 2**31 - 1, 1)
    return pack_rows(
        store, packing or cfg.packing, "val", rng, cfg.eval_batch_size, seq_len or cfg.seq_len
    )


INFERENCE_FORMATS = ("bos_doc_start", "doc_start_no_bos", "mid_doc_no_bos")


def inference_rows(store: TokenStore, fmt: str, n: int, seq_len: int, seed: int = 0) -> Batch:
    """Validation rows in one of Barbero §5's inference formats: BOS + a document from its start;
    the document from its start without BOS; a window starting mid-document without BOS. Short
    documents are padded (masked out of the loss). The two document-start formats score the same
    tokens, x_2..x_T: with BOS the prediction of x_1 is left out, without BOS the last target."""
    if fmt not in INFERENCE_FORMATS:
        raise DataError(f"unknown inference format {fmt!r}; use one of {INFERENCE_FORMATS}")
    rng = _rng(seed, 2**31 - 2, 2)
    length = seq_len + 1
    toks = np.full((n, length), PAD, np.int64)
    for r in range(n):
        d = store.doc(int(rng.choice(store.val_docs)))
        if fmt == "mid_doc_no_bos":
            start = int(rng.integers(1, max(2, len(d) // 2)))
            d = d[start:]
        piece = np.concatenate([[BOS], d]) if fmt == "bos_doc_start" else d
        piece = piece[:length]
        toks[r, : len(piece)] = piece
    real = toks != PAD
    loss_mask = real[:, 1:].astype(np.float32)
    if fmt == "bos_doc_start":
        loss_mask[:, 0] = 0.0
    elif fmt == "doc_start_no_bos":
        loss_mask[:, -1] = 0.0
    segs = real.astype(np.int64)
    return Batch(
        inputs=toks[:, :-1].astype(np.int32),
        targets=toks[:, 1:].astype(np.int32),
        loss_mask=loss_mask,
        segment_ids=segs[:, :-1].astype(np.int32),
        positions=None,
    )
