"""Corpus configuration: sources, tokenizers, packings and the special token ids."""

from __future__ import annotations

import dataclasses

from sinks_jax.config import require
from sinks_jax.tasks.bigram_backcopy.config import SHAKESPEARE_CHARS

BOS, EOS, PAD = 256, 257, 258
SYNTHETIC_VERSION = 2  # part of the cache key: bump when the synthetic generators change
VOCAB_SIZE = 259
TOKENIZERS = ("bytes", "bpe")
SOURCES = ("builtin", "path", "synthetic_bb", "synthetic_markov", "synthetic_khop")
SYNTHETIC_SOURCES = ("synthetic_bb", "synthetic_markov", "synthetic_khop")
PACKINGS = (
    "bos_per_doc_causal",
    "bos_per_doc_masked",
    "bos_window_start",
    "no_bos",
    "one_doc_per_row",
)


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Where the documents come from, how they are tokenised and how they fill a window."""

    source: str = "synthetic_bb"
    path: str = ""  # for source=path
    separator: str = "\n\n\n"  # for a single .txt file
    n_docs: int = 2000  # synthetic documents
    doc_len_min: int = 16
    doc_len_max: int = 160
    synthetic_vocab: int = 32
    n_triggers: int = 3  # synthetic_khop: trigger classes, hop counts 1..n_triggers
    per_doc_table: bool = False  # synthetic_bb: one bigram table per document
    trigger_rate: float = 0.1  # synthetic_khop: chance of a trigger after a filler token
    tokenizer: str = "bytes"  # "bytes" or "bpe" (Hugging Face tokenizers, trained on the corpus)
    bpe_vocab: int = 1024  # BPE vocabulary (text sources only)
    val_fraction: float = 0.05
    cache_dir: str = ".cache/sinks_jax"
    packing: str = "bos_per_doc_causal"
    seq_len: int = 64
    batch_size: int = 64
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        require(self.source in SOURCES, "data.source", self.source, str(SOURCES))
        require(
            not self.path or self.source == "path",
            "data.path",
            self.path,
            f"only with data.source='path' (got data.source={self.source!r}); add "
            "--set data.source=path",
        )
        if self.source == "synthetic_bb":
            chars = self.synthetic_vocab if self.per_doc_table else SHAKESPEARE_CHARS
            require(
                0 <= self.n_triggers < chars,
                "data.n_triggers",
                self.n_triggers,
                f"in [0, {chars}) (the table has {chars} characters)",
            )
        if self.source == "synthetic_khop":
            require(
                1 <= self.n_triggers <= 256 - self.synthetic_vocab,
                "data.n_triggers",
                self.n_triggers,
                f"in [1, {256 - self.synthetic_vocab}] (trigger ids follow synthetic_vocab's)",
            )
            require(0 < self.trigger_rate < 1, "data.trigger_rate", self.trigger_rate, "in (0, 1)")
        require(self.packing in PACKINGS, "data.packing", self.packing, str(PACKINGS))
        require(
            2 <= self.doc_len_min <= self.doc_len_max,
            "data.doc_len_min",
            self.doc_len_min,
            f"in [2, doc_len_max={self.doc_len_max}]",
        )
        require(
            2 <= self.synthetic_vocab <= 256,
            "data.synthetic_vocab",
            self.synthetic_vocab,
            "in [2, 256]",
        )
        require(self.tokenizer in TOKENIZERS, "data.tokenizer", self.tokenizer, str(TOKENIZERS))
        require(
            256 <= self.bpe_vocab <= 65535 - VOCAB_SIZE,
            "data.bpe_vocab",
            self.bpe_vocab,
            f"in [256, {65535 - VOCAB_SIZE}]",
        )
        require(0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction, "in (0, 1)")
        require(self.seq_len >= 4, "data.seq_len", self.seq_len, ">= 4")
        require(self.batch_size >= 1, "data.batch_size", self.batch_size, ">= 1")
        require(self.eval_batch_size >= 1, "data.eval_batch_size", self.eval_batch_size, ">= 1")
        require(self.n_docs >= 2, "data.n_docs", self.n_docs, ">= 2 (train and validation)")


def is_byte_text(cfg: CorpusConfig) -> bool:
    """True when token ids are UTF-8 bytes of real text (so newline, space, … mean something)."""
    return cfg.source in ("builtin", "path") and cfg.tokenizer == "bytes"


def vocab_size(cfg: CorpusConfig) -> int:
    """Model vocabulary for this corpus: bytes + BOS/EOS/PAD, plus the BPE merges if any."""
    return VOCAB_SIZE + (cfg.bpe_vocab if cfg.tokenizer == "bpe" else 0)
