"""Where documents come from: Python's own documentation, a folder or file of text, or
synthetic Bigram-Backcopy / Markov documents."""

from __future__ import annotations

import ast
import json
import sysconfig
from pathlib import Path

import numpy as np

from sinks_jax.errors import DataError
from sinks_jax.tasks.bigram_backcopy.data import load_shakespeare_table
from sinks_jax.tasks.corpus.config import (
    CorpusConfig,
)

TEST_SUITE_DIRS = frozenset({"test", "tests", "idle_test"})


def is_test_suite(rel_path: str) -> bool:
    """A standard-library file of a test suite (`test/`, `*/tests/`, `idlelib/idle_test/`,
    `test_*.py`), or of site-packages. Library modules *about* testing (`unittest`, `doctest`)
    are documentation like any other and are kept (until 2026-11 a substring match on "test"
    dropped them too; the corpus content hash changed with this rule)."""
    parts = rel_path.split("/")
    return (
        "site-packages" in parts
        or bool(TEST_SUITE_DIRS & set(parts[:-1]))
        or parts[-1].startswith("test_")
    )


def builtin_documents() -> list[str]:
    """pydoc topic texts plus standard-library docstrings longer than 200 characters (sorted,
    site-packages and test suites skipped: `is_test_suite`)."""
    from pydoc_data import topics

    docs = [topics.topics[k] for k in sorted(topics.topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for file in sorted(stdlib.rglob("*.py")):
        if is_test_suite(file.relative_to(stdlib).as_posix()):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    docs.append(doc)
    return docs


# Control bytes that do not occur in text (all of C0 and DEL except \t \n \f \r); with U+FFFD,
# more than BINARY_SHARE of a file's characters mark it as binary.
_CONTROL_BYTES = bytes([*range(0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_REPLACEMENT_UTF8 = "\ufffd".encode()
BINARY_SHARE = 0.01


def _read_corpus_text(path: Path) -> str:
    """A corpus file's text: strict UTF-8, newlines translated as text-mode `open` does (\\r\\n
    and \\r become \\n). An unreadable, binary-looking or non-UTF-8 file is a `DataError` naming
    it. Cheap: a NUL search, one decode and a byte count."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read corpus file {path}: {e.strerror or e}") from None
    binary = f"{path} looks like a binary file, not text"
    if b"\x00" in raw:
        raise DataError(f"{binary} (a NUL byte at byte {raw.index(0)})")
    controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))
    if controls > BINARY_SHARE * len(raw):
        raise DataError(f"{binary} ({controls} of {len(raw)} bytes are control characters)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:  # legacy encodings land here, so U+FFFD share is no sign
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 text at byte {e.start} ({e.reason}); "
            "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    odd = controls + raw.count(_REPLACEMENT_UTF8)
    if odd > BINARY_SHARE * len(text):
        raise DataError(
            f"{binary} ({odd} of {len(text)} characters are control or replacement characters)"
        )
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _json_kind(value) -> str:
    for kind, name in ((type(None), "null"), (bool, "a boolean"), (int | float, "a number")):
        if isinstance(value, kind):
            return name
    names: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "a value")


def _jsonl_text(line: str, where: str) -> str:
    """The `text` field of one JSONL record (`where` = file:line for the error message)."""
    expected = "expected a JSON object with a 'text' field"
    try:
        record = json.loads(line)
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply; {expected}") from None
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise DataError(f"{where}: not valid JSON ({reason}); {expected}") from None
    if not isinstance(record, dict) or "text" not in record:
        got = "an object without 'text'" if isinstance(record, dict) else _json_kind(record)
        raise DataError(f"{where}: {expected}, got {got}")
    text = record["text"]
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string, got {_json_kind(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{where}: 'text' holds an unpaired surrogate \\u{ord(text[e.start]):04x}, "
            "not valid Unicode text"
        ) from None
    return text


def path_documents(path: str, separator: str) -> list[str]:
    if not path:
        raise DataError(
            "data.source='path' needs a corpus: --set data.path=DIR_OR_FILE (a folder of .txt "
            "files, a .txt file split on data.separator, or a .jsonl file with a 'text' field)"
        )
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
        files = sorted(f for f in p.rglob("*.txt") if f.is_file()) if is_dir else []
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise DataError(
            f"cannot read corpus path {p}: {getattr(e, 'strerror', None) or e}"
        ) from None
    if not exists:
        raise DataError(
            f"corpus path {p} does not exist; pass a folder of .txt files, a .txt or a .jsonl file"
        )
    if is_dir:
        if not files:
            raise DataError(f"no .txt files under {p}")
        docs = [_read_corpus_text(f) for f in files]
    elif p.suffix == ".jsonl":
        # Split on \n only: str.splitlines() also splits on U+2028, U+0085, … which JSON strings
        # may hold unescaped.
        lines = _read_corpus_text(p).split("\n")
        docs = [_jsonl_text(line, f"{p}:{i + 1}") for i, line in enumerate(lines) if line.strip()]
    else:
        docs = _read_corpus_text(p).split(separator)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"corpus {p} has no non-empty documents")
    return docs


def _doc_lengths(rng: np.random.Generator, cfg: CorpusConfig) -> np.ndarray:
    return rng.integers(cfg.doc_len_min, cfg.doc_len_max + 1, cfg.n_docs)


def synthetic_documents(cfg: CorpusConfig, seed: int) -> list[np.ndarray]:
    """Bigram-Backcopy documents (after a trigger, copy the token before it) on the foundation's
    Shakespeare table (ids < 67), or, with `per_doc_table` or for `synthetic_markov`, on one
    random Dirichlet(0.3) table per document over ids < synthetic_vocab (in-context statistics)."""
    rng = np.random.default_rng(seed)
    lengths = _doc_lengths(rng, cfg)
    if cfg.source == "synthetic_bb" and not cfg.per_doc_table:
        task = load_shakespeare_table(cfg.n_triggers)
        conds, first_probs = task.cond[None], task.first_token_probs
        triggers = task.trigger_mask
    else:
        v = cfg.synthetic_vocab
        conds = np.stack([rng.dirichlet(np.full(v, 0.3), size=v) for _ in range(cfg.n_docs)])
        first_probs = np.full(v, 1.0 / v)
        triggers = np.zeros(v, bool)
        if cfg.source == "synthetic_bb":
            triggers[rng.choice(v, min(cfg.n_triggers, v - 1), replace=False)] = True
            first_probs = np.where(triggers, 0.0, first_probs)
            first_probs /= first_probs.sum()
    v = conds.shape[-1]
    table = np.arange(cfg.n_docs) % len(conds)
    t_max = int(lengths.max())
    seqs = np.zeros((cfg.n_docs, t_max), np.int64)
    seqs[:, 0] = rng.choice(v, cfg.n_docs, p=first_probs)
    cum = np.cumsum(conds, axis=-1)
    for t in range(1, t_max):
        prev = seqs[:, t - 1]
        u = rng.random(cfg.n_docs)[:, None]
        nxt = (u > cum[table, prev]).sum(-1).clip(0, v - 1)
        if t >= 2:
            nxt = np.where(triggers[prev], seqs[:, t - 2], nxt)
        seqs[:, t] = nxt
    return [seqs[i, : lengths[i]] for i in range(cfg.n_docs)]


def khop_target(doc: np.ndarray, trigger_pos: int, hops: int, is_filler: np.ndarray) -> int | None:
    """What a k-hop trigger at `trigger_pos` predicts (`synthetic_khop`): the token before the
    trigger k − 1 triggers back (k = 1: the token before this trigger, Bigram-Backcopy's
    back-copy); None when fewer than k − 1 triggers stand before it. Computed hop by hop, a model
    needs k attention layers: layer 1 writes "the token before me" at every trigger, layer ℓ
    copies layer ℓ − 1's result from the previous trigger."""
    triggers = np.flatnonzero(~is_filler[doc[: trigger_pos + 1]])
    i = len(triggers) - hops  # the trigger k − 1 back (triggers[-1] is this one)
    return None if i < 0 else int(doc[triggers[i] - 1])


def khop_documents(cfg: CorpusConfig, seed: int) -> list[np.ndarray]:
    """k-hop back-copy documents (`synthetic_khop`, a depth design for Barbero et al.'s
    over-mixing argument). Filler tokens come from one random Dirichlet(1) bigram table over ids
    < synthetic_vocab, the same for every document (learnt in the weights, as Bigram-Backcopy's:
    no head is needed to predict a filler token). After two filler tokens, with probability
    `trigger_rate`, comes a trigger of class k (id synthetic_vocab + k − 1), then its target
    (`khop_target`: the token before the trigger k − 1 triggers back); k is uniform over the
    classes with enough earlier triggers (up to `n_triggers`). Hop k needs hop k − 1's result, so
    a class-k trigger needs k attention layers in sequence, each with work at the triggers (≈ 8 %
    of tokens) and none elsewhere."""
    rng = np.random.default_rng(seed)
    lengths = _doc_lengths(rng, cfg)
    v, n_classes = cfg.synthetic_vocab, cfg.n_triggers
    is_filler = np.arange(v + n_classes) < v
    cum = np.cumsum(rng.dirichlet(np.ones(v), size=v), axis=-1)
    docs = []
    for length in lengths:
        u, pick = rng.random(length), rng.random(length)
        trig = rng.random(length) < cfg.trigger_rate
        doc = np.zeros(length, np.int64)
        doc[0] = rng.integers(v)
        target, n_before = None, 0  # the pending target; triggers so far
        for t in range(1, length):
            if target is not None:  # after a trigger: its target
                doc[t], target = target, None
            elif t >= 2 and trig[t] and doc[t - 2] < v:
                k = 1 + int(pick[t] * min(n_classes, n_before + 1))
                doc[t] = v + k - 1
                target = khop_target(doc, t, k, is_filler)
                n_before += 1
            else:
                doc[t] = min(int((u[t] > cum[doc[t - 1]]).sum()), v - 1)
        docs.append(doc)
    return docs
