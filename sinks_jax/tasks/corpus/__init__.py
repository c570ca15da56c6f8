"""Corpora for small GPTs (Barbero et al. 2025 §4–5; Gu et al. 2025): sources, a byte tokenizer,
a cached token store, and the packing strategies that decide where BOS, EOS and document
boundaries sit in a training window.

Sources: `builtin` (the English documentation shipped with Python: `pydoc_data.topics` and
standard-library docstrings longer than 200 characters; no download), `path` (a folder of `.txt`
files, one `.txt` file split on `separator`, or a `.jsonl` file with a `text` field),
`synthetic_bb` (Bigram-Backcopy documents, optionally one bigram table per document),
`synthetic_markov` (per-document Markov chains) and `synthetic_khop` (k-hop back-copy: a class-k
trigger predicts the token before the trigger k − 1 triggers back; the depth design).
Tokens are bytes 0..255 plus BOS, EOS and PAD; synthetic documents use ids below
`synthetic_vocab` (k-hop triggers the next `n_triggers` ids); `tokenizer="bpe"` trains a byte-level
BPE (Hugging Face `tokenizers`) on a text corpus instead. The tokenised corpus is a flat `uint16`
array plus document offsets (numpy memmap), cached under a key of the sources' content hash and
the tokenizer; documents are split into train / validation deterministically. Cache files are
written atomically and `manifest.json`, written last, marks a complete entry; an entry that fails
its integrity check on load (or a `bpe.json` that does not load) is rebuilt. Corpus files must be
UTF-8 text: invalid UTF-8, binary-looking files and malformed JSONL records are `DataError`s
naming the file (and line).

Packing strategies (Barbero et al. 2025 §5; Gu et al. 2025, Fig. 1):
1. `bos_per_doc_causal`: [BOS doc BOS doc …] back to back, cut into windows at random offsets,
   plain causal attention across documents (BOS tokens appear mid-window);
2. `bos_per_doc_masked`: as 1, attention restricted to the same document (segment mask),
   positions restarting at each BOS, the next document's BOS not predicted. A window cut inside a
   document gets BOS prepended to that leading fragment (the window's last token is dropped), so
   every segment starts with BOS at position 0, the premise of Barbero et al. §5 ("BOS always
   first"); the fragment is a document's tail, not its start, so its first token is not a
   target (BOS → a mid-document token is not a document start);
3. `bos_window_start`: [doc EOS doc EOS …] cut at random offsets, BOS prepended to each window;
4. `no_bos`: as 3 without BOS;
5. `one_doc_per_row`: BOS + one document from its start + EOS, padding masked out of the loss.

Every batch is a pure function of (seed, step): `packed_batch(store, cfg, seed, step)`.
"""

from __future__ import annotations

from sinks_jax.tasks.corpus.config import (
    BOS,
    EOS,
    PACKINGS,
    PAD,
    SOURCES,
    SYNTHETIC_SOURCES,
    SYNTHETIC_VERSION,
    TOKENIZERS,
    VOCAB_SIZE,
    CorpusConfig,
    is_byte_text,
    vocab_size,
)
from sinks_jax.tasks.corpus.packing import (
    INFERENCE_FORMATS,
    eval_rows,
    inference_rows,
    pack_rows,
    packed_batch,
)
from sinks_jax.tasks.corpus.sources import (
    BINARY_SHARE,
    builtin_documents,
    khop_documents,
    khop_target,
    path_documents,
    synthetic_documents,
)
from sinks_jax.tasks.corpus.store import (
    CACHE_FORMAT,
    MANIFEST,
    TokenStore,
    build_store,
    decode,
    encode,
)

__all__ = [
    "BINARY_SHARE",
    "BOS",
    "CACHE_FORMAT",
    "EOS",
    "INFERENCE_FORMATS",
    "MANIFEST",
    "PACKINGS",
    "PAD",
    "SOURCES",
    "SYNTHETIC_SOURCES",
    "SYNTHETIC_VERSION",
    "TOKENIZERS",
    "VOCAB_SIZE",
    "CorpusConfig",
    "TokenStore",
    "build_store",
    "builtin_documents",
    "decode",
    "encode",
    "eval_rows",
    "inference_rows",
    "is_byte_text",
    "khop_documents",
    "khop_target",
    "pack_rows",
    "packed_batch",
    "path_documents",
    "synthetic_documents",
    "vocab_size",
]
