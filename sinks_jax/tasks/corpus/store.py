"""The tokenised corpus: a flat uint16 array and document offsets, cached on disk (atomic
writes, a manifest as the completeness mark, an integrity check on load), bytes or BPE."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from sinks_jax.errors import DataError
from sinks_jax.run_dir import atomic_write
from sinks_jax.tasks.bigram_backcopy.data import load_shakespeare_table
from sinks_jax.tasks.corpus.config import (
    BOS,
    EOS,
    PAD,
    SYNTHETIC_SOURCES,
    SYNTHETIC_VERSION,
    VOCAB_SIZE,
    CorpusConfig,
)
from sinks_jax.tasks.corpus.sources import (
    builtin_documents,
    khop_documents,
    path_documents,
    synthetic_documents,
)


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
            "n_tokens": len(tokens),
            "n_docs": len(offsets) - 1,
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
    if cfg.source == "synthetic_khop":  # trigger classes as T1, T2, …
        v = cfg.synthetic_vocab
        return " ".join(
            special.get(int(i)) or (f"T{int(i) - v + 1}" if int(i) >= v else str(int(i)))
            for i in np.asarray(ids)
        )
    if cfg.source in SYNTHETIC_SOURCES:
        return " ".join(special.get(int(i)) or str(int(i)) for i in np.asarray(ids))
    if cfg.tokenizer == "bpe":
        from tokenizers import Tokenizer

        if store is None:
            raise ValueError("decoding BPE ids needs the corpus's store (it holds the tokenizer)")
        tok = Tokenizer.from_file(str(Path(store.info["cache"]) / "bpe.json"))
        parts: list[str] = []
        run: list[int] = []  # decode runs of ordinary ids together (multi-byte characters)
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
    if cfg.source in SYNTHETIC_SOURCES:
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
        if cfg.source == "synthetic_khop":
            desc["trigger_rate"] = cfg.trigger_rate
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
            generate = khop_documents if cfg.source == "synthetic_khop" else synthetic_documents
            docs = [d.astype(np.uint16) for d in generate(cfg, seed)]
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
    n_val = max(1, round(cfg.val_fraction * n))
    info = {**desc, "n_docs": n, "n_tokens": len(tokens), "cache": str(cache)}
    return TokenStore(tokens, offsets, np.sort(order[n_val:]), np.sort(order[:n_val]), info)
