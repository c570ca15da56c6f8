"""Corpora for small GPTs (Barbero et al. 2025 §4–5; Gu et al. 2025): sources, a byte tokenizer,
a cached token store, and the packing strategies that decide where BOS, EOS and document
boundaries sit in a training window.

Sources: `builtin` (the English documentation shipped with Python: `pydoc_data.topics` and
standard-library docstrings longer than 200 characters; no download), `path` (a folder of `.txt`
files, one `.txt` file split on `separator`, or a `.jsonl` file with a `text` field),
`synthetic_bb` (Bigram-Backcopy documents, optionally one bigram table per document) and
`synthetic_markov` (per-document Markov chains). Tokens are bytes 0..255 plus BOS, EOS and PAD;
synthetic documents use ids below `synthetic_vocab`; `tokenizer="bpe"` trains a byte-level BPE
(Hugging Face `tokenizers`) on a text corpus instead. The tokenised corpus is a flat `uint16`
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

import ast
import dataclasses
import hashlib
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

from sinks_jax.config import SHAKESPEARE_CHARS, require
from sinks_jax.data import Batch, load_shakespeare_table
from sinks_jax.errors import DataError
from sinks_jax.run_dir import atomic_write

BOS, EOS, PAD = 256, 257, 258
SYNTHETIC_VERSION = 2  # part of the cache key: bump when the synthetic generators change
VOCAB_SIZE = 259
TOKENIZERS = ("bytes", "bpe")
SOURCES = ("builtin", "path", "synthetic_bb", "synthetic_markov")
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
    n_triggers: int = 3
    per_doc_table: bool = False  # synthetic_bb: one bigram table per document
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


# ---------------------------------------------------------------------------------------------
# Sources


def builtin_documents() -> list[str]:
    """pydoc topic texts plus standard-library docstrings longer than 200 characters (sorted,
    site-packages and tests skipped)."""
    from pydoc_data import topics

    docs = [topics.topics[k] for k in sorted(topics.topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for file in sorted(stdlib.rglob("*.py")):
        rel = file.relative_to(stdlib).as_posix()
        if "site-packages" in rel or "test" in rel.split("/")[0] or "/tests/" in rel:
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
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), "a value")


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


# ---------------------------------------------------------------------------------------------
# Token store


@dataclasses.dataclass(frozen=True, eq=False)
class TokenStore:
    """Flat tokens and document offsets, split by document into train and validation."""

    tokens: np.ndarray  # [N] uint16
    offsets: np.ndarray  # [D+1] int64
    train_docs: np.ndarray  # document indices
    val_docs: np.ndarray
    info: dict  # source description, content hash, python version

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def stream(self, split: str, separator: str = "eos") -> np.ndarray:
        """The split's documents back to back (cached): with `separator="eos"` each followed by
        EOS, with `"bos"` each preceded by BOS."""
        key = f"_stream_{split}_{separator}"
        if key not in self.__dict__:
            docs = self.train_docs if split == "train" else self.val_docs
            sep = np.array([EOS if separator == "eos" else BOS], np.uint16)
            parts = [
                np.concatenate([self.doc(i), sep] if separator == "eos" else [sep, self.doc(i)])
                for i in docs
            ]
            object.__setattr__(self, key, np.concatenate(parts))
        return self.__dict__[key]


def _hash(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def is_byte_text(cfg: CorpusConfig) -> bool:
    """True when token ids are UTF-8 bytes of real text (so newline, space, … mean something)."""
    return cfg.source in ("builtin", "path") and cfg.tokenizer == "bytes"


def vocab_size(cfg: CorpusConfig) -> int:
    """Model vocabulary for this corpus: bytes + BOS/EOS/PAD, plus the BPE merges if any."""
    return VOCAB_SIZE + (cfg.bpe_vocab if cfg.tokenizer == "bpe" else 0)


# ---------------------------------------------------------------------------------------------
# Cache files: atomic writes, a manifest as the completeness mark, an integrity check on load

CACHE_FORMAT = 1  # manifest.json "format"
MANIFEST = "manifest.json"


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _cache_write_error(cache: Path, e: OSError) -> DataError:
    return DataError(
        f"cannot write the corpus cache {cache}: {e.strerror or e}; point data.cache_dir at a "
        "writable folder with free space"
    )


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _write_cache(cache: Path, tokens: np.ndarray, offsets: np.ndarray, key: str) -> None:
    """tokens.npy and offsets.npy, then manifest.json (the mark of a complete entry), each
    atomically. A stale manifest is removed first, so no manifest vouches for arrays in flux."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / MANIFEST).unlink(missing_ok=True)
        _atomic_save_npy(cache / "tokens.npy", tokens)
        _atomic_save_npy(cache / "offsets.npy", offsets)
        manifest = {
            "format": CACHE_FORMAT,
            "content_hash": key,
            "n_tokens": int(len(tokens)),
            "n_docs": int(len(offsets) - 1),
            "tokens_dtype": str(tokens.dtype),
            "offsets_dtype": str(offsets.dtype),
            "tokens_bytes": (cache / "tokens.npy").stat().st_size,
            "offsets_bytes": (cache / "offsets.npy").stat().st_size,
            "tokens_sha256": _sha256(tokens),  # provenance; not re-read on every load
            "offsets_sha256": _sha256(offsets),  # checked on load (the array is small)
        }
        text = json.dumps(manifest, indent=1) + "\n"
        atomic_write(cache / MANIFEST, lambda f: f.write(text.encode("utf-8")))
    except OSError as e:
        raise _cache_write_error(cache, e) from None


def _load_cache(cache: Path, key: str, bpe: bool) -> tuple[np.ndarray, np.ndarray] | str:
    """(tokens memmap, offsets) of a complete, consistent cache entry, or why it is not one:
    manifest present and parseable, file sizes, shapes and dtypes as recorded, offsets from 0,
    non-decreasing, ending at len(tokens) and matching their checksum, and a bpe.json that loads
    for a BPE corpus."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{MANIFEST} missing"
    except (OSError, ValueError) as e:
        return f"{MANIFEST} unreadable: {_one_line(e)}"
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        return f"{MANIFEST} has another format"
    try:
        n_tokens, n_docs = int(manifest["n_tokens"]), int(manifest["n_docs"])
        sizes = {name: int(manifest[f"{name}_bytes"]) for name in ("tokens", "offsets")}
        offsets_sha = str(manifest["offsets_sha256"])
    except (KeyError, TypeError, ValueError):
        return f"{MANIFEST} lacks fields"
    if manifest.get("content_hash") != key:
        return f"{MANIFEST} describes other content"
    for name, size in sizes.items():
        try:
            actual = (cache / f"{name}.npy").stat().st_size
        except OSError:
            return f"{name}.npy missing"
        if actual != size:
            return f"{name}.npy has {actual} bytes, {MANIFEST} says {size}"
    arrays = {}
    for name in ("tokens", "offsets"):
        try:  # tokens as a memmap: a cache hit reads only the headers and the offsets
            arrays[name] = np.load(
                cache / f"{name}.npy", mmap_mode="r" if name == "tokens" else None
            )
        except Exception as e:  # a damaged .npy header fails in numpy's parser in many ways
            return f"{name}.npy does not load: {type(e).__name__}: {_one_line(e)}"
    tokens, offsets = arrays["tokens"], arrays["offsets"]
    if tokens.dtype != np.uint16 or tokens.shape != (n_tokens,):
        return f"tokens.npy is {tokens.dtype}{list(tokens.shape)}, expected uint16[{n_tokens}]"
    if offsets.dtype != np.int64 or offsets.shape != (n_docs + 1,):
        return f"offsets.npy is {offsets.dtype}{list(offsets.shape)}, expected int64[{n_docs + 1}]"
    if offsets[0] != 0 or offsets[-1] != n_tokens or (np.diff(offsets) < 0).any():
        return "offsets.npy does not run from 0 up to len(tokens)"
    if _sha256(offsets) != offsets_sha:
        return "offsets.npy does not match its checksum"
    if bpe:
        try:
            _tokenizer_class().from_file(str(cache / "bpe.json"))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            return f"bpe.json does not load: {_one_line(e)}"
    return tokens, offsets


def _tokenizer_class():
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DataError(
            "data.tokenizer='bpe' needs the Hugging Face tokenizers package: "
            "pip install -e '.[bpe]' (or use data.tokenizer=bytes)"
        ) from None
    return Tokenizer


def _train_bpe(texts: list[str], cfg: CorpusConfig, path: Path):
    """Byte-level BPE (Hugging Face `tokenizers`) trained on the corpus, saved to `path`
    (atomically); an existing `path` is reused if it loads and retrained if it does not."""
    Tokenizer = _tokenizer_class()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if path.exists():
        try:
            return Tokenizer.from_file(str(path))
        except Exception:  # damaged (build_store's integrity check has said so): retrain
            pass
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.bpe_vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(tok.to_str(pretty=True).encode("utf-8")))
    except OSError as e:
        raise _cache_write_error(path.parent, e) from None
    return tok


def encode(texts: list[str], cfg: CorpusConfig, cache: Path) -> list[np.ndarray]:
    """Token ids per document: UTF-8 bytes (0..255), or BPE ids shifted past the specials
    (VOCAB_SIZE + id), so BOS/EOS/PAD keep their ids under every tokenizer."""
    if cfg.tokenizer == "bytes":
        return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.uint16) for t in texts]
    tok = _train_bpe(texts, cfg, cache / "bpe.json")
    return [np.asarray(e.ids, np.uint16) + VOCAB_SIZE for e in tok.encode_batch(texts)]


def decode(ids: np.ndarray, cfg: CorpusConfig, store: TokenStore | None = None) -> str:
    """Inverse of `encode` for display (specials shown as <BOS>, <EOS>, <PAD>; synthetic ids as
    the Shakespeare table's characters, or as numbers for random tables)."""
    special = {BOS: "<BOS>", EOS: "<EOS>", PAD: "<PAD>"}
    if cfg.source == "synthetic_bb" and not cfg.per_doc_table:
        itos = load_shakespeare_table(cfg.n_triggers).itos
        return "".join(special.get(int(i)) or itos[int(i)] for i in np.asarray(ids))
    if cfg.source in ("synthetic_bb", "synthetic_markov"):
        return " ".join(special.get(int(i)) or str(int(i)) for i in np.asarray(ids))
    if cfg.tokenizer == "bpe":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(Path(store.info["cache"]) / "bpe.json"))
        parts, run = [], []  # decode runs of ordinary ids together (multi-byte characters)
        for i in [int(i) for i in np.asarray(ids)] + [None]:
            if i is None or i in special:
                if run:
                    parts.append(tok.decode(run))
                    run = []
                if i is not None:
                    parts.append(special[i])
            else:
                run.append(i - VOCAB_SIZE)
        return "".join(parts)
    data = bytes(int(i) for i in np.asarray(ids) if int(i) < 256)
    if len(data) == len(np.asarray(ids)):
        return data.decode("utf-8", errors="replace")
    return "".join(special.get(int(i)) or chr(int(i)) for i in np.asarray(ids))


def build_store(cfg: CorpusConfig, seed: int = 0) -> TokenStore:
    """Tokenise the configured source once and cache it on disk as a flat `uint16` array plus
    document offsets (`tokens.npy`, `offsets.npy`, read back as numpy memmaps) and a
    `manifest.json`; a cache entry that fails its integrity check is rebuilt."""
    if cfg.source in ("synthetic_bb", "synthetic_markov"):
        desc = {
            k: getattr(cfg, k)
            for k in (
                "source",
                "n_docs",
                "doc_len_min",
                "doc_len_max",
                "synthetic_vocab",
                "n_triggers",
                "per_doc_table",
            )
        }
        desc.update(seed=seed, generator=SYNTHETIC_VERSION)
        key = _hash([json.dumps(desc, sort_keys=True).encode()])
        texts = None
        tokenizer = "synthetic ids"
    else:
        texts = (
            builtin_documents()
            if cfg.source == "builtin"
            else path_documents(cfg.path, cfg.separator)
        )
        desc = {"source": cfg.source, "path": cfg.path, "python": sys.version.split()[0]}
        key = _hash([t.encode("utf-8") for t in texts])
        tokenizer = "bytes" if cfg.tokenizer == "bytes" else f"bpe{cfg.bpe_vocab}"
    desc.update({"content_hash": key, "tokenizer": tokenizer, "val_fraction": cfg.val_fraction})
    cache = Path(cfg.cache_dir) / f"{cfg.source}-{key[:16]}-{tokenizer.replace(' ', '_')}"
    bpe = texts is not None and cfg.tokenizer == "bpe"
    loaded = _load_cache(cache, key, bpe)
    if isinstance(loaded, str):
        if any((cache / name).exists() for name in (MANIFEST, "tokens.npy", "offsets.npy")):
            print(
                f"[sinks_jax] corpus cache {cache} is incomplete or damaged ({loaded}); rebuilding"
            )
        if texts is None:
            docs = [d.astype(np.uint16) for d in synthetic_documents(cfg, seed)]
        else:
            docs = encode(texts, cfg, cache)
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
        tokens = np.concatenate(docs) if docs else np.zeros(0, np.uint16)
        _write_cache(cache, tokens, offsets, key)
        loaded = _load_cache(cache, key, bpe)
        if isinstance(loaded, str):
            raise DataError(f"corpus cache {cache} fails its check right after a rebuild: {loaded}")
    tokens, offsets = loaded
    n = len(offsets) - 1
    if n < 2:
        raise DataError(
            f"corpus {desc['source']} has {n} document(s); need at least 2 (train and validation)"
        )
    order = np.random.default_rng(0).permutation(n)  # split independent of the training seed
    n_val = max(1, int(round(cfg.val_fraction * n)))
    info = {**desc, "n_docs": n, "n_tokens": int(len(tokens)), "cache": str(cache)}
    return TokenStore(tokens, offsets, np.sort(order[n_val:]), np.sort(order[:n_val]), info)


# ---------------------------------------------------------------------------------------------
# Packing


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
