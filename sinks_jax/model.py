"""Decoder-only GPT in Flax NNX, with typed observables and interventions as call options.

`GPT(cfg, rngs=...)(tokens_BxT)` returns `ModelOutput(logits, layers=None)`. Pass
`capture=Capture.all()` (or a subset) to also get, per layer, a `LayerObservables` pytree: attention
logits/weights [B,H,T,T], per-head values after W_o [B,H,T,D], per-head outputs, the attention and
MLP block outputs and the residual stream after the block. Flags are static Python values, so a
forward pass that captures nothing traces exactly the same program as one without the feature.

Interventions (Guo et al. 2024, §3.2) are options of the same call: zero a layer's attention or MLP
output, or force a head's attention onto BOS ("move attention to BOS").
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
from flax import nnx, struct

from sinks_jax.attention import ATTENTION_VARIANTS, causal_mask, document_mask
from sinks_jax.config import ModelConfig

# ---------------------------------------------------------------------------------------------
# What to return and what to change


@dataclasses.dataclass(frozen=True)
class Capture:
    """Which intermediates the forward pass returns (cf. gemma's sow config)."""

    attention: bool = False  # attention logits and weights
    values: bool = False  # per-head value vectors after W_o
    head_outputs: bool = False  # per-head attention outputs (sum over keys of A * W_o v)
    blocks: bool = False  # attention-block and MLP outputs
    residual: bool = False  # residual stream after each block (before the final LN)

    @classmethod
    def all(cls) -> Capture:
        return cls(True, True, True, True, True)

    @property
    def any(self) -> bool:
        return any(dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class Interventions:
    """Static changes to the forward pass; layers and heads are 0-indexed."""

    zero_attention: tuple[int, ...] = ()
    zero_mlp: tuple[int, ...] = ()
    attention_to_bos: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs

    def bos_heads(self, layer: int) -> tuple[int, ...]:
        return tuple(h for (l, h) in self.attention_to_bos if l == layer)


@struct.dataclass
class LayerObservables:
    """Per-layer intermediates; a field is None when its `Capture` flag is off."""

    attn_logits: jax.Array | None = None  # [B,H,T,T] raw scaled scores (mask not applied)
    attn_weights: jax.Array | None = None  # [B,H,T,T]
    head_values: jax.Array | None = None  # [B,H,T,D] W_o v_k per head
    head_outputs: jax.Array | None = None  # [B,H,T,D]
    attn_out: jax.Array | None = None  # [B,T,D] (zeros if the layer has no attention)
    mlp_out: jax.Array | None = None  # [B,T,D] (zeros if the layer has no MLP)
    residual: jax.Array | None = None  # [B,T,D] residual stream after the block


@struct.dataclass
class ModelOutput:
    logits: jax.Array  # [B,T,V]
    layers: tuple[LayerObservables, ...] | None = None
    embeddings: jax.Array | None = None  # [B,T,D] residual stream entering layer 0


# ---------------------------------------------------------------------------------------------
# Initialisers


def _torch_uniform(fan_in: int) -> nnx.Initializer:
    """PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _dense(cfg: ModelConfig, d_in: int, d_out: int, rngs: nnx.Rngs, bias: bool | None = None):
    use_bias = cfg.use_bias if bias is None else bias
    if cfg.init == "torch":
        kernel_init = bias_init = _torch_uniform(d_in)
    else:
        kernel_init, bias_init = nnx.initializers.normal(0.02), nnx.initializers.zeros_init()
    return nnx.Linear(
        d_in, d_out, use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs
    )


def _embed(cfg: ModelConfig, n: int, rngs: nnx.Rngs) -> nnx.Embed:
    std = 1.0 if cfg.init == "torch" else 0.02  # torch nn.Embedding default is N(0, 1)
    return nnx.Embed(n, cfg.d_model, embedding_init=nnx.initializers.normal(std), rngs=rngs)


def _layer_norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)


# ---------------------------------------------------------------------------------------------
# Positions


def sinusoidal_positions(positions_BxT: jax.Array, d_model: int) -> jax.Array:
    """Vaswani et al. 2017 fixed encodings, [B,T,D]."""
    half = d_model // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half, 1))
    angles = positions_BxT[..., None].astype(jnp.float32) * freqs
    enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(enc, [(0, 0), (0, 0), (0, d_model - 2 * half)])


def apply_rope(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, base: float) -> jax.Array:
    """Rotary embeddings (Su et al. 2021), rotating pairs (i, i + K/2)."""
    half = x_BxTxHxK.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions_BxT[:, :, None, None].astype(jnp.float32) * freqs  # [B,T,1,K/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = x_BxTxHxK[..., :half], x_BxTxHxK[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


# ---------------------------------------------------------------------------------------------
# Modules


class MultiHeadAttention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, k = cfg.d_model, cfg.n_heads, cfg.d_head
        self.query = _dense(cfg, d, h * k, rngs)
        self.key = _dense(cfg, d, h * k, rngs)
        self.value = _dense(cfg, d, h * k, rngs)
        self.out = _dense(cfg, h * k, d, rngs)
        self.variant = ATTENTION_VARIANTS[cfg.attention](h, k, rngs=rngs)

    def __call__(
        self, x_BxTxD, mask_BxTxT, positions_BxT, capture: Capture, bos_heads: tuple[int, ...]
    ) -> tuple[jax.Array, LayerObservables]:
        cfg = self.cfg
        b, t, _ = x_BxTxD.shape
        split = lambda y: y.reshape(b, t, cfg.n_heads, cfg.d_head)  # noqa: E731
        q_BxTxHxK = split(self.query(x_BxTxD))
        k_BxTxHxK = split(self.key(x_BxTxD))
        v_BxTxHxK = split(self.value(x_BxTxD))
        if cfg.positions == "rope":
            q_BxTxHxK = apply_rope(q_BxTxHxK, positions_BxT, cfg.rope_base)
            k_BxTxHxK = apply_rope(k_BxTxHxK, positions_BxT, cfg.rope_base)

        logits_BxHxTxT = self.variant.logits(q_BxTxHxK, k_BxTxHxK)
        att_BxHxTxT = self.variant.weights(logits_BxHxTxT, mask_BxTxT)
        if bos_heads:  # Guo et al.: move this head's attention entirely onto BOS
            forced = jnp.zeros_like(att_BxHxTxT).at[..., 0].set(1.0)
            is_forced = jnp.isin(jnp.arange(cfg.n_heads), jnp.asarray(bos_heads))
            att_BxHxTxT = jnp.where(is_forced[None, :, None, None], forced, att_BxHxTxT)

        v_dtype = jnp.promote_types(v_BxTxHxK.dtype, jnp.float32)
        ctx_BxTxHxK = jnp.einsum("bhts,bshk->bthk", att_BxHxTxT, v_BxTxHxK.astype(v_dtype))
        out_BxTxD = self.out(ctx_BxTxHxK.reshape(b, t, -1).astype(x_BxTxD.dtype))

        obs = LayerObservables()
        if capture.attention:
            obs = obs.replace(attn_logits=logits_BxHxTxT, attn_weights=att_BxHxTxT)
        if capture.values or capture.head_outputs:
            w_o_HxKxD = self.out.kernel[...].reshape(cfg.n_heads, cfg.d_head, cfg.d_model)
            vo_BxHxTxD = jnp.einsum("bthk,hkd->bhtd", v_BxTxHxK, w_o_HxKxD)
            if capture.values:
                obs = obs.replace(head_values=vo_BxHxTxD)
            if capture.head_outputs:
                obs = obs.replace(
                    head_outputs=jnp.einsum("bhts,bhsd->bhtd", att_BxHxTxT, vo_BxHxTxD)
                )
        return out_BxTxD, obs


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.fc_in = _dense(cfg, cfg.d_model, cfg.d_mlp, rngs)
        self.fc_out = _dense(cfg, cfg.d_mlp, cfg.d_model, rngs)
        self.activation = jax.nn.relu if cfg.mlp_activation == "relu" else jax.nn.gelu

    def __call__(self, x_BxTxD):
        return self.fc_out(self.activation(self.fc_in(x_BxTxD)))


class Block(nnx.Module):
    """One transformer layer; attention or MLP may be removed (`layers_without_*`)."""

    def __init__(self, cfg: ModelConfig, layer: int, *, rngs: nnx.Rngs):
        self.cfg, self.layer = cfg, layer
        has_attn = layer not in cfg.layers_without_attention
        has_mlp = layer not in cfg.layers_without_mlp
        self.attn = MultiHeadAttention(cfg, rngs=rngs) if has_attn else None
        self.mlp = MLP(cfg, rngs=rngs) if has_mlp else None
        use_ln = cfg.norm != "none"
        self.ln_attn = _layer_norm(cfg, rngs) if has_attn and use_ln else None
        self.ln_mlp = _layer_norm(cfg, rngs) if has_mlp and use_ln else None

    def __call__(
        self, x_BxTxD, mask_BxTxT, positions_BxT, capture: Capture, interventions: Interventions
    ) -> tuple[jax.Array, LayerObservables]:
        pre, post = self.cfg.norm == "pre", self.cfg.norm == "post"
        obs = LayerObservables()
        attn_out = jnp.zeros_like(x_BxTxD)
        if self.attn is not None:
            attn_in = self.ln_attn(x_BxTxD) if pre else x_BxTxD
            attn_out, obs = self.attn(
                attn_in, mask_BxTxT, positions_BxT, capture, interventions.bos_heads(self.layer)
            )
            if self.layer in interventions.zero_attention:
                attn_out = jnp.zeros_like(attn_out)
            x_BxTxD = x_BxTxD + attn_out
            if post:
                x_BxTxD = self.ln_attn(x_BxTxD)
        mlp_out = jnp.zeros_like(x_BxTxD)
        if self.mlp is not None:
            mlp_out = self.mlp(self.ln_mlp(x_BxTxD) if pre else x_BxTxD)
            if self.layer in interventions.zero_mlp:
                mlp_out = jnp.zeros_like(mlp_out)
            x_BxTxD = x_BxTxD + mlp_out
            if post:
                x_BxTxD = self.ln_mlp(x_BxTxD)
        if capture.blocks:
            obs = obs.replace(attn_out=attn_out, mlp_out=mlp_out)
        if capture.residual:
            obs = obs.replace(residual=x_BxTxD)
        return x_BxTxD, obs


class GPT(nnx.Module):
    """Decoder-only transformer (pre-LN by default; post-LN with `norm='post'`, none with
    `norm='none'`)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.token_embed = _embed(cfg, cfg.vocab_size, rngs)
        self.pos_embed = _embed(cfg, cfg.max_len, rngs) if cfg.positions == "learned" else None
        self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
        self.ln_final = _layer_norm(cfg, rngs) if cfg.final_norm else None
        self.head = None if cfg.tie_embeddings else _dense(cfg, cfg.d_model, cfg.vocab_size, rngs)

    def __call__(
        self,
        tokens_BxT: jax.Array,
        *,
        segment_ids_BxT: jax.Array | None = None,
        positions_BxT: jax.Array | None = None,
        capture: Capture = Capture(),
        interventions: Interventions = Interventions(),
        token_embeddings_BxTxD: jax.Array | None = None,
    ) -> ModelOutput:
        """`token_embeddings_BxTxD`, when given, replaces the token-embedding lookup (positions
        are still added): it lets analyses differentiate with respect to the input tokens."""
        chex.assert_rank(tokens_BxT, 2)
        chex.assert_type(tokens_BxT, int)
        b, t = tokens_BxT.shape
        if t > self.cfg.max_len and self.cfg.positions == "learned":
            raise ValueError(f"sequence length {t} exceeds model.max_len={self.cfg.max_len}")
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(t), (b, t))
        if segment_ids_BxT is None:
            mask_BxTxT = causal_mask(t)
        else:
            chex.assert_equal_shape([segment_ids_BxT, tokens_BxT])
            mask_BxTxT = document_mask(segment_ids_BxT)
        mask_BxTxT = jnp.broadcast_to(mask_BxTxT, (b, t, t))

        if token_embeddings_BxTxD is None:
            x_BxTxD = self.token_embed(tokens_BxT)
        else:
            chex.assert_shape(token_embeddings_BxTxD, (b, t, self.cfg.d_model))
            x_BxTxD = token_embeddings_BxTxD
        if self.cfg.positions == "learned":
            x_BxTxD = x_BxTxD + self.pos_embed(positions_BxT)
        elif self.cfg.positions == "sinusoidal":
            x_BxTxD = x_BxTxD + sinusoidal_positions(positions_BxT, self.cfg.d_model)
        embeddings = x_BxTxD

        layers = []
        for block in self.blocks:
            x_BxTxD, obs = block(x_BxTxD, mask_BxTxT, positions_BxT, capture, interventions)
            layers.append(obs)
        if self.ln_final is not None:
            x_BxTxD = self.ln_final(x_BxTxD)
        if self.head is None:
            logits_BxTxV = self.token_embed.attend(x_BxTxD)
        else:
            logits_BxTxV = self.head(x_BxTxD)
        chex.assert_shape(logits_BxTxV, (b, t, self.cfg.vocab_size))
        if not capture.any:
            return ModelOutput(logits=logits_BxTxV)
        return ModelOutput(
            logits=logits_BxTxV,
            layers=tuple(layers),
            embeddings=embeddings if capture.residual else None,
        )


class VectorTransformer(nnx.Module):
    """The same blocks on continuous inputs: features [B,T,F] → linear embedding → blocks →
    linear readout [B,T,d_out] (for regression tasks such as catch-tag-release averaging).
    `cfg.vocab_size`, `tie_embeddings` and learned positions are not used; positions may be
    `sinusoidal`, `rope` or `none`."""

    def __init__(self, cfg: ModelConfig, n_features: int, d_out: int, *, rngs: nnx.Rngs):
        if cfg.positions == "learned":
            raise ValueError("VectorTransformer: use positions 'none', 'sinusoidal' or 'rope'")
        self.cfg = cfg
        self.embed = _dense(cfg, n_features, cfg.d_model, rngs)
        self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
        self.ln_final = _layer_norm(cfg, rngs) if cfg.final_norm else None
        self.readout = _dense(cfg, cfg.d_model, d_out, rngs)

    def __call__(
        self,
        features_BxTxF: jax.Array,
        *,
        capture: Capture = Capture(),
        interventions: Interventions = Interventions(),
    ) -> ModelOutput:
        chex.assert_rank(features_BxTxF, 3)
        b, t, _ = features_BxTxF.shape
        positions_BxT = jnp.broadcast_to(jnp.arange(t), (b, t))
        mask_BxTxT = jnp.broadcast_to(causal_mask(t), (b, t, t))
        x_BxTxD = self.embed(features_BxTxF)
        if self.cfg.positions == "sinusoidal":
            x_BxTxD = x_BxTxD + sinusoidal_positions(positions_BxT, self.cfg.d_model)
        embeddings = x_BxTxD
        layers = []
        for block in self.blocks:
            x_BxTxD, obs = block(x_BxTxD, mask_BxTxT, positions_BxT, capture, interventions)
            layers.append(obs)
        if self.ln_final is not None:
            x_BxTxD = self.ln_final(x_BxTxD)
        out_BxTxO = self.readout(x_BxTxD)
        if not capture.any:
            return ModelOutput(logits=out_BxTxO)
        return ModelOutput(
            logits=out_BxTxO,
            layers=tuple(layers),
            embeddings=embeddings if capture.residual else None,
        )
