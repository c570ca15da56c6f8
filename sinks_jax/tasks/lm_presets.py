"""The small-GPT building blocks every LM experiment's presets share (`experiments.lm_sinks`,
the context, depth and packing sweeps): corpora, models, optimisers and the GPU training budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sinks_jax.config import ModelConfig, OptimConfig, TrainConfig
from sinks_jax.tasks import corpus

# Bigram-Backcopy documents on the foundation's Shakespeare table, one per row from BOS. Enough
# documents (4.3 M tokens) that a quick run does not see a document prefix twice on average: with
# 4,000 documents the models memorised prefixes (validation loss rose after 400 steps) and no
# head became a sink.
SYNTHETIC = corpus.CorpusConfig(
    source="synthetic_bb",
    n_docs=30_000,
    doc_len_min=129,
    doc_len_max=160,
    packing="one_doc_per_row",
    seq_len=32,
    batch_size=128,
    eval_batch_size=128,
)
# Python's own English documentation (pydoc topics + stdlib docstrings), bytes, packed windows.
BUILTIN_TEXT = corpus.CorpusConfig(
    source="builtin",
    packing="bos_window_start",
    seq_len=128,
    batch_size=16,
    eval_batch_size=64,
)
# Your corpus (a folder of .txt, a .txt or a .jsonl file), for a GPU.
YOUR_CORPUS = corpus.CorpusConfig(
    source="path",
    path="",
    packing="bos_window_start",
    seq_len=1024,
    batch_size=256,
    eval_batch_size=32,  # captured attention of 12 layers at 1024² fits a GPU's memory
    tokenizer="bpe",
    bpe_vocab=8192,
)
SMALL = ModelConfig(vocab_size=0, d_model=64, d_mlp=256, n_layers=2, n_heads=4, max_len=64)
TEXT_MODEL = dataclasses.replace(SMALL, n_layers=4, max_len=128)
PAPER_MODEL = ModelConfig(
    vocab_size=0,
    d_model=512,
    d_mlp=2048,
    n_layers=12,
    n_heads=8,
    max_len=1024,
    init="gpt2",
    mlp_activation="gelu",
)


def on_gpu(model: ModelConfig, **changes: Any) -> ModelConfig:
    """`model` (with `changes`) on a GPU's fast paths: bf16 matmuls and fused attention."""
    return dataclasses.replace(model, compute_dtype="bfloat16", fused_attention=True, **changes)


QUICK_OPTIM = OptimConfig(name="adamw", lr=1e-3, b2=0.99, weight_decay=0.1)
PAPER_OPTIM = OptimConfig(
    name="adamw",
    lr=6e-4,
    b2=0.95,
    weight_decay=0.1,
    schedule="cosine",
    warmup_steps=200,
    grad_clip=1.0,
)

# 256 × 1024 tokens per step do not fit an 80 GB GPU at once in float32 (12 layers of 8 × 1024²
# attention maps per row): 16 micro-batches of 16 rows, gradients accumulated. Measured on one
# H100: 0.99 s/step (264k tokens/s), so 2000 steps ≈ 33 minutes.
PAPER_TRAIN = TrainConfig(steps=2000, eval_every=200, checkpoint_every=500, microbatches=16)
