"""Configuration of a Bigram-Backcopy run (Guo et al. 2024, arXiv 2410.13835, §3)."""

from __future__ import annotations

import dataclasses

from sinks_jax.config import RunConfig, check_sink_eps, require, require_positive

SHAKESPEARE_CHARS = 65  # characters of the shipped Bigram-Backcopy table (67 ids less BOS, delim)


@dataclasses.dataclass(frozen=True)
class BBDataConfig:
    """Bigram-Backcopy task (Guo et al. 2024, §3)."""

    seq_len: int = 64  # T: model input length
    batch_size: int = 64
    n_triggers: int = 3
    table: str = "shakespeare"  # "shakespeare" (shipped file) or "synthetic" (Dirichlet rows)
    synthetic_vocab: int = 20  # characters in a synthetic table (+ BOS + delimiter)
    synthetic_concentration: float = 0.3
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        require_positive(
            self,
            "seq_len",
            "batch_size",
            "n_triggers",
            "eval_batch_size",
            "synthetic_vocab",
            "synthetic_concentration",
            prefix="data",
        )
        require(self.seq_len >= 2, "data.seq_len", self.seq_len, "an integer >= 2")
        require(
            self.table in ("shakespeare", "synthetic"),
            "data.table",
            self.table,
            "('shakespeare', 'synthetic')",
        )
        chars = SHAKESPEARE_CHARS if self.table == "shakespeare" else self.synthetic_vocab
        require(
            self.n_triggers < chars,
            "data.n_triggers",
            self.n_triggers,
            f"fewer than the {chars} characters of the {self.table} table",
        )


@dataclasses.dataclass(frozen=True)
class BBConfig(RunConfig):
    """A model trained on Bigram-Backcopy; `sink_eps` are the ε of the reported sink rates
    (Gu et al. 2024), as in `lm.LMConfig`."""

    data: BBDataConfig = BBDataConfig()
    sink_eps: tuple[float, ...] = (0.3,)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_sink_eps(self.sink_eps)
        require(
            self.model.vocab_size > 0, "model.vocab_size", self.model.vocab_size, "an integer > 0"
        )
        require(
            self.model.max_len >= self.data.seq_len,
            "model.max_len",
            self.model.max_len,
            f">= data.seq_len={self.data.seq_len}",
        )
