"""The PyTorch eager twin of the benchmark's model, for `python -m benchmarks.train_step --torch`.

Same architecture and shapes as `sinks_jax.model.GPT` under the benchmark's config (Guo et al.'s
Bigram-Backcopy model): token + learned position embeddings, pre-LN blocks, attention with
**three separate** query / key / value `nn.Linear` layers (as `sinks_jax` has them) and an output
projection, causal softmax attention computed explicitly (scores, mask, softmax, weighted sum: no
fused SDPA kernel), a ReLU MLP, a final LayerNorm, an untied head with bias, mean cross-entropy,
and `torch.optim.AdamW` (its default implementation for the device). Under `bfloat16` the forward
pass and loss run in `torch.autocast(dtype=torch.bfloat16)` (parameters and optimiser in fp32, as
in `sinks_jax`'s precision policy). Only the step time is compared, so the initialisation is
torch's default. Importing this module imports torch: the benchmark imports it only for `--torch`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.ln_attn = nn.LayerNorm(d_model, eps=1e-5)
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ln_mlp = nn.LayerNorm(d_model, eps=1e-5)
        self.fc_in = nn.Linear(d_model, d_mlp)
        self.fc_out = nn.Linear(d_mlp, d_model)

    def forward(self, x_BxTxD: torch.Tensor, mask_TxT: torch.Tensor) -> torch.Tensor:
        b, t, d = x_BxTxD.shape
        y = self.ln_attn(x_BxTxD)

        def heads(z: torch.Tensor) -> torch.Tensor:  # [B,T,D] -> [B,H,T,K]
            return z.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.query(y)), heads(self.key(y)), heads(self.value(y))
        scores_BxHxTxT = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        scores_BxHxTxT = scores_BxHxTxT.masked_fill(~mask_TxT, -1e9)
        weights = torch.softmax(scores_BxHxTxT.float(), dim=-1).to(v.dtype)
        ctx = (weights @ v).transpose(1, 2).reshape(b, t, d)
        x_BxTxD = x_BxTxD + self.out(ctx)
        return x_BxTxD + self.fc_out(F.relu(self.fc_in(self.ln_mlp(x_BxTxD))))


class TorchGPT(nn.Module):
    def __init__(self, vocab: int, max_len: int, d_model: int, n_layers: int, n_heads: int, d_mlp):
        super().__init__()
        self.token_embed = nn.Embedding(vocab, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads, d_mlp) for _ in range(n_layers)])
        self.ln_final = nn.LayerNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens_BxT: torch.Tensor, targets_BxT: torch.Tensor) -> torch.Tensor:
        t = tokens_BxT.shape[1]
        positions = torch.arange(t, device=tokens_BxT.device)
        mask_TxT = torch.ones(t, t, dtype=torch.bool, device=tokens_BxT.device).tril()
        x = self.token_embed(tokens_BxT) + self.pos_embed(positions)[None]
        for block in self.blocks:
            x = block(x, mask_TxT)
        logits_BxTxV = self.head(self.ln_final(x))
        return F.cross_entropy(logits_BxTxV.float().flatten(0, 1), targets_BxT.flatten())


def make_runner(
    *,
    tokens,  # numpy [B, T+1] int
    vocab: int,
    d_model: int,
    n_layers: int,
    n_heads: int,
    d_mlp: int,
    precision: str,
    device: str,
    threads: int,
    optim: dict[str, float],
    tf32: bool = False,
) -> tuple[Callable[[int], None], int]:
    """(run(k): k train steps, synchronised at the end; parameter count). `tf32` lets CUDA
    matmuls use TF32 while this runner runs (the flag is restored after each call)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    seq_len = tokens.shape[1] - 1
    model = TorchGPT(vocab, seq_len, d_model, n_layers, n_heads, d_mlp).to(device)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=optim["lr"],
        betas=(optim["b1"], optim["b2"]),
        eps=optim["eps"],
        weight_decay=optim["weight_decay"],
    )
    data = torch.tensor(tokens, dtype=torch.long, device=device)  # a copy
    inputs, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def autocast():
        if precision == "bfloat16":
            return torch.autocast(device_type=dev_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(k: int) -> None:
        torch.set_num_threads(threads)  # per call: the setting is global to the process
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            for _ in range(k):
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = model(inputs, targets)
                loss.backward()
                opt.step()
            if dev_type == "cuda":
                torch.cuda.synchronize()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before

    return run, sum(p.numel() for p in model.parameters())
