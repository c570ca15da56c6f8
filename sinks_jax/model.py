"""Decoder-only transformers in Flax NNX, with typed observables and interventions as call options.

`GPT(cfg, rngs=...)(tokens_BxT)` returns `ModelOutput(logits, layers=None)`. Pass
`capture=Capture.all()` (or a subset, optionally of some `layers`) to also get, per layer, a
`LayerObservables` pytree: attention logits/weights [B,H,T,S], per-head values after W_o [B,H,S,D],
per-head outputs, the attention and MLP block outputs and the residual stream after the block.
Flags are static Python values, so a forward pass that captures nothing traces exactly the same
program as one without the feature.

Interventions are options of the same call: a tuple of static `Edit`s, each changing one named
site (`SITES`) of some layers. Ready-made: zero a layer's attention or MLP output, force a head's
attention onto BOS ("move attention to BOS", Guo et al. 2024 §3.2), zero a head, scale values.
`GPT` (tokens) and `VectorTransformer` (continuous features) share one `DecoderTrunk`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, TypeVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from sinks_jax.attention import (
    ATTENTION_VARIANTS,
    AttentionVariant,
    SoftmaxAttention,
    causal_mask,
    document_mask,
    with_virtual_keys,
)
from sinks_jax.config import ModelConfig

_T = TypeVar("_T")

# ---------------------------------------------------------------------------------------------
# What to return


@dataclasses.dataclass(frozen=True)
class Capture:
    """Which intermediates the forward pass returns (cf. gemma's sow config); `layers` selects
    the layers to capture (None = all; the others come back as empty `LayerObservables`)."""

    attention: bool = False  # attention logits and weights
    values: bool = False  # per-head value vectors after W_o
    head_outputs: bool = False  # per-head attention outputs (sum over keys of A * W_o v)
    blocks: bool = False  # attention-block and MLP outputs
    residual: bool = False  # residual stream after each block (before the final LN)
    layers: tuple[int, ...] | None = None

    @classmethod
    def all(cls, layers: tuple[int, ...] | None = None) -> Capture:
        return cls(True, True, True, True, True, layers)

    @property
    def any(self) -> bool:
        return any((self.attention, self.values, self.head_outputs, self.blocks, self.residual))

    def at(self, layer: int) -> Capture:
        """What to capture at `layer` (nothing when it is not selected)."""
        if self.layers is None or layer in self.layers:
            return self
        return Capture()


# ---------------------------------------------------------------------------------------------
# What to change: edits at named sites

SITES = {
    "attn_logits": "[B,H,T,S] scaled scores before the mask",
    "attn_weights": "[B,H,T,S] attention weights",
    "head_values": "[B,S,H,K] value vectors of each head (before W_o)",
    "head_outputs": "[B,T,H,K] each head's weighted sum of values (before W_o)",
    "attn_out": "[B,T,D] attention block output (after W_o)",
    "mlp_out": "[B,T,D] MLP block output",
    "residual": "[B,T,D] residual stream after the block",
}
INNER_ATTENTION_SITES = ("attn_logits", "attn_weights", "head_values", "head_outputs")


@dataclasses.dataclass(frozen=True)
class Edit:
    """A static change of one site (`SITES`) in some layers. Subclass it, set `site`, implement
    `__call__(x, layer)`; keep fields hashable (tuples) — or declare `eq=False` to hold arrays,
    e.g. activations to patch in (the edit is then a compile-time constant of its forward pass,
    and an edit holding other arrays is another pass: `static_key`)."""

    site: ClassVar[str] = ""
    layers: tuple[int, ...] = ()

    def applies(self, layer: int) -> bool:
        return layer in self.layers

    def __call__(self, x: jax.Array, layer: int) -> jax.Array:
        raise NotImplementedError

    # Edits are static arguments of the jitted forward, so equality decides which compiled pass
    # is reused. `static_key` holds every field of the subclass (whatever its own dataclass
    # options), a jax array by identity and a numpy array by content, so a patch with other
    # values is another compiled pass, never a cached one with the old constants. `Interventions`
    # compares its edits by this key.
    def static_key(self) -> tuple:
        """Taken once. Give each edit arrays of its own: JAX itself may reuse a numpy constant
        it has seen by object, so a buffer refilled in place can be read stale."""
        key = self.__dict__.get("_static_key")
        if key is None:
            values = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
            key = (type(self), jax.tree.map(_array_key, values))
            object.__setattr__(self, "_static_key", key)  # a frozen dataclass: a cache, not a field
        return key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edit) and self.static_key() == other.static_key()

    def __hash__(self) -> int:
        return hash(self.static_key())


def _array_key(value: object) -> object:
    if isinstance(value, np.ndarray):
        return ("numpy", value.shape, value.dtype.str, value.tobytes())
    if isinstance(value, jax.Array):
        return _IdentityKey(value)
    return value


class _IdentityKey:
    """Compares and hashes the value it wraps by identity."""

    __slots__ = ("value",)

    def __init__(self, value: object):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IdentityKey) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


@dataclasses.dataclass(frozen=True)
class ZeroAttention(Edit):
    """Remove the attention block's output of `layers`."""

    site: ClassVar[str] = "attn_out"

    def __call__(self, x, layer):
        return jnp.zeros_like(x)


@dataclasses.dataclass(frozen=True)
class ZeroMLP(Edit):
    """Remove the MLP's output of `layers`."""

    site: ClassVar[str] = "mlp_out"

    def __call__(self, x, layer):
        return jnp.zeros_like(x)


def _head_edit(heads: tuple[tuple[int, int], ...], layer: int, n_heads: int) -> jax.Array:
    selected = [h for (l, h) in heads if l == layer]
    return jnp.isin(jnp.arange(n_heads), jnp.asarray(selected, dtype=jnp.int32))


@dataclasses.dataclass(frozen=True)
class AttentionToBOS(Edit):
    """Guo et al. 2024 §3.2: move these (layer, head) pairs' attention entirely onto BOS."""

    site: ClassVar[str] = "attn_weights"
    heads: tuple[tuple[int, int], ...] = ()

    def applies(self, layer):
        return any(l == layer for l, _ in self.heads)

    def __call__(self, x_BxHxTxS, layer):
        forced = jnp.zeros_like(x_BxHxTxS).at[..., 0].set(1.0)
        is_forced_H = _head_edit(self.heads, layer, x_BxHxTxS.shape[1])
        return jnp.where(is_forced_H[None, :, None, None], forced, x_BxHxTxS)


@dataclasses.dataclass(frozen=True)
class ZeroHeads(Edit):
    """Ablate (layer, head) pairs: their output (before W_o) is zero."""

    site: ClassVar[str] = "head_outputs"
    heads: tuple[tuple[int, int], ...] = ()

    def applies(self, layer):
        return any(l == layer for l, _ in self.heads)

    def __call__(self, x_BxTxHxK, layer):
        is_zeroed_H = _head_edit(self.heads, layer, x_BxTxHxK.shape[2])
        return jnp.where(is_zeroed_H[None, None, :, None], 0.0, x_BxTxHxK)


@dataclasses.dataclass(frozen=True)
class ScaleValues(Edit):
    """Multiply the value vectors of keys at `positions` by `factor` in every head of `layers`
    (e.g. factor 0 at position 0 removes what BOS writes; cf. Guo et al.'s value drain)."""

    site: ClassVar[str] = "head_values"
    positions: tuple[int, ...] = (0,)
    factor: float = 0.0

    def __call__(self, v_BxSxHxK, layer):
        at_S = jnp.isin(jnp.arange(v_BxSxHxK.shape[1]), jnp.asarray(self.positions))
        return jnp.where(at_S[None, :, None, None], self.factor * v_BxSxHxK, v_BxSxHxK)


@dataclasses.dataclass(frozen=True)
class Interventions:
    """Static changes to the forward pass; layers and heads are 0-indexed. The three fields are
    shorthands for the ready-made edits; `edits` takes any others, applied after them."""

    zero_attention: tuple[int, ...] = ()
    zero_mlp: tuple[int, ...] = ()
    attention_to_bos: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs
    edits: tuple[Edit, ...] = ()

    def _key(self) -> tuple:
        edits = tuple(e.static_key() for e in self.edits)
        return (self.zero_attention, self.zero_mlp, self.attention_to_bos, edits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interventions) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def all_edits(self) -> tuple[Edit, ...]:
        ready: list[Edit] = []
        if self.zero_attention:
            ready.append(ZeroAttention(self.zero_attention))
        if self.zero_mlp:
            ready.append(ZeroMLP(self.zero_mlp))
        if self.attention_to_bos:
            ready.append(AttentionToBOS(heads=self.attention_to_bos))
        return (*ready, *self.edits)

    def edits_at(self, site: str, layer: int) -> tuple[Edit, ...]:
        return tuple(e for e in self.all_edits() if e.site == site and e.applies(layer))

    def apply(self, site: str, layer: int, x: jax.Array) -> jax.Array:
        """`x` after every edit of `site` at `layer` (in order)."""
        for edit in self.edits_at(site, layer):
            x = edit(x, layer)
        return x

    def __post_init__(self) -> None:
        for edit in self.edits:
            if edit.site not in SITES:
                raise ValueError(f"{type(edit).__name__}.site={edit.site!r}: one of {list(SITES)}")


class LayerObservables(struct.PyTreeNode):
    """Per-layer intermediates; a field is None when its `Capture` flag is off."""

    attn_logits: jax.Array | None = None  # [B,H,T,S] raw scaled scores (mask not applied)
    attn_weights: jax.Array | None = None  # [B,H,T,S]
    head_values: jax.Array | None = None  # [B,H,S,D] W_o v_k per head
    head_outputs: jax.Array | None = None  # [B,H,T,D]
    attn_out: jax.Array | None = None  # [B,T,D] (zeros if the layer has no attention)
    mlp_out: jax.Array | None = None  # [B,T,D] (zeros if the layer has no MLP)
    residual: jax.Array | None = None  # [B,T,D] residual stream after the block


class ModelOutput(struct.PyTreeNode):
    logits: jax.Array  # [B,T,V]
    layers: tuple[LayerObservables, ...] | None = None
    embeddings: jax.Array | None = None  # [B,T,D] residual stream entering layer 0

    @property
    def observed(self) -> tuple[LayerObservables, ...]:
        """The per-layer observables (ValueError when the forward pass captured none)."""
        return captured(self.layers, "layers")


def captured(x: _T | None, name: str = "observable") -> _T:
    """`x`, captured by the forward pass; a ValueError naming the `Capture` flag to set if not."""
    if x is None:
        raise ValueError(f"{name} was not captured: set its Capture flag")
    return x


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
        d_in,
        d_out,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=matmul_dtype(cfg),
        rngs=rngs,
    )


def matmul_dtype(cfg: ModelConfig) -> jnp.dtype | None:
    """The dtype the dense layers compute in: bf16 under `compute_dtype='bfloat16'`, else None
    (the inputs' and parameters' own dtype: float32, or float64 in the theory checks). Parameters
    are float32 either way."""
    return jnp.dtype(jnp.bfloat16) if cfg.compute_dtype == "bfloat16" else None


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

    def fused(self, capture: Capture, interventions: Interventions, layer: int) -> bool:
        """Whether this call may use the fused kernel: `model.fused_attention`, plain softmax,
        and nothing inside the attention captured or edited."""
        return (
            self.cfg.fused_attention
            and type(self.variant) is SoftmaxAttention
            and not (capture.attention or capture.values or capture.head_outputs)
            and not any(interventions.edits_at(site, layer) for site in INNER_ATTENTION_SITES)
        )

    def __call__(
        self,
        x_BxTxD,
        mask_BxTxT,
        positions_BxT,
        capture: Capture,
        interventions: Interventions,
        layer: int,
    ) -> tuple[jax.Array, LayerObservables]:
        cfg = self.cfg
        b, t, _ = x_BxTxD.shape
        edit = lambda site, x: interventions.apply(site, layer, x)  # noqa: E731
        split = lambda y: y.reshape(b, t, cfg.n_heads, cfg.d_head)  # noqa: E731
        q_BxTxHxK = split(self.query(x_BxTxD))
        k_BxTxHxK = split(self.key(x_BxTxD))
        v_BxTxHxK = split(self.value(x_BxTxD))
        if cfg.positions == "rope":
            q_BxTxHxK = apply_rope(q_BxTxHxK, positions_BxT, cfg.rope_base)
            k_BxTxHxK = apply_rope(k_BxTxHxK, positions_BxT, cfg.rope_base)
        k_BxSxHxK, v_BxSxHxK = self.variant.keys_values(k_BxTxHxK, v_BxTxHxK)
        v_BxSxHxK = edit("head_values", v_BxSxHxK)
        mask_BxTxS = with_virtual_keys(mask_BxTxT, self.variant.n_virtual)

        obs = LayerObservables()
        if self.fused(capture, interventions, layer):  # same result, no [T, S] weights kept
            ctx_BxTxHxK = jax.nn.dot_product_attention(
                q_BxTxHxK,
                k_BxSxHxK,
                v_BxSxHxK,
                mask=mask_BxTxS[:, None],
                scale=1.0 / math.sqrt(cfg.d_head),
            )
            out_BxTxD = self.out(ctx_BxTxHxK.reshape(b, t, -1).astype(x_BxTxD.dtype))
            return out_BxTxD, obs

        logits_BxHxTxS = edit(
            "attn_logits", self.variant.logits(q_BxTxHxK, k_BxSxHxK, positions_BxT)
        )
        att_BxHxTxS = edit("attn_weights", self.variant.weights(logits_BxHxTxS, mask_BxTxS))

        # A·V: in bf16 with float32 accumulation under the bf16 policy, else in float32 (or
        # float64); the weights themselves are always computed in float32 or wider.
        if cfg.compute_dtype == "bfloat16":
            av_dtype = v_BxSxHxK.dtype
        else:
            av_dtype = jnp.promote_types(v_BxSxHxK.dtype, jnp.float32)
        ctx_BxTxHxK = jnp.einsum(
            "bhts,bshk->bthk",
            att_BxHxTxS.astype(av_dtype),
            v_BxSxHxK.astype(av_dtype),
            preferred_element_type=jnp.promote_types(av_dtype, jnp.float32),
        )
        ctx_BxTxHxK = edit("head_outputs", self.variant.gate(x_BxTxD, ctx_BxTxHxK))
        out_BxTxD = self.out(ctx_BxTxHxK.reshape(b, t, -1).astype(x_BxTxD.dtype))

        if capture.attention:
            obs = obs.replace(attn_logits=logits_BxHxTxS, attn_weights=att_BxHxTxS)
        if capture.values or capture.head_outputs:
            w_o_HxKxD = self.out.kernel[...].reshape(cfg.n_heads, cfg.d_head, cfg.d_model)
            vo_BxHxSxD = jnp.einsum("bshk,hkd->bhsd", v_BxSxHxK, w_o_HxKxD)
            if capture.values:
                obs = obs.replace(head_values=vo_BxHxSxD)
            gates = type(self.variant).gate is not AttentionVariant.gate
            if capture.head_outputs and (gates or interventions.edits_at("head_outputs", layer)):
                ho_BxHxTxD = jnp.einsum("bthk,hkd->bhtd", ctx_BxTxHxK, w_o_HxKxD)  # gated, edited
                obs = obs.replace(head_outputs=ho_BxHxTxD)
            elif capture.head_outputs:
                ho_BxHxTxD = jnp.einsum("bhts,bhsd->bhtd", att_BxHxTxS, vo_BxHxSxD)
                obs = obs.replace(head_outputs=ho_BxHxTxD)
        return out_BxTxD, obs


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.fc_in = _dense(cfg, cfg.d_model, cfg.d_mlp, rngs)
        self.fc_out = _dense(cfg, cfg.d_mlp, cfg.d_model, rngs)
        self.activation = jax.nn.relu if cfg.mlp_activation == "relu" else jax.nn.gelu

    def __call__(self, x_BxTxD):
        return self.fc_out(self.activation(self.fc_in(x_BxTxD)))


def _norm(ln: nnx.LayerNorm | None, x_BxTxD: jax.Array) -> jax.Array:
    """`ln(x)`, or `x` in a model without LayerNorm (`norm="none"`)."""
    return x_BxTxD if ln is None else ln(x_BxTxD)


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
        layer = self.layer
        obs = LayerObservables()
        attn_out = jnp.zeros_like(x_BxTxD)
        if self.attn is not None:
            attn_in = _norm(self.ln_attn, x_BxTxD) if pre else x_BxTxD
            attn_out, obs = self.attn(
                attn_in, mask_BxTxT, positions_BxT, capture, interventions, layer
            )
            attn_out = interventions.apply("attn_out", layer, attn_out)
            x_BxTxD = x_BxTxD + attn_out
            if post:
                x_BxTxD = _norm(self.ln_attn, x_BxTxD)
        mlp_out = jnp.zeros_like(x_BxTxD)
        if self.mlp is not None:
            mlp_out = self.mlp(_norm(self.ln_mlp, x_BxTxD) if pre else x_BxTxD)
            mlp_out = interventions.apply("mlp_out", layer, mlp_out)
            x_BxTxD = x_BxTxD + mlp_out
            if post:
                x_BxTxD = _norm(self.ln_mlp, x_BxTxD)
        x_BxTxD = interventions.apply("residual", layer, x_BxTxD)
        if capture.blocks:
            obs = obs.replace(attn_out=attn_out, mlp_out=mlp_out)
        if capture.residual:
            obs = obs.replace(residual=x_BxTxD)
        return x_BxTxD, obs


class DecoderTrunk(nnx.Module):
    """What every model here shares: positions added to the input embedding, the block loop, the
    final norm and the packaging of observables. Subclasses embed their inputs and read out; the
    trunk's parameters live on the subclass (`blocks`, `ln_final`), so checkpoints keep their
    paths. With `model.scan_layers`, `blocks` is one `Block` whose parameters carry a leading
    layer axis (`copy_parameters` moves weights between a scanned and an unrolled model)."""

    cfg: ModelConfig
    pos_embed: nnx.Embed | None = None

    def init_trunk(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        if cfg.scan_layers:

            @nnx.split_rngs(splits=cfg.n_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def stacked_blocks(rngs: nnx.Rngs) -> Block:
                return Block(cfg, 0, rngs=rngs)

            self.blocks: Block | nnx.List[Block] = stacked_blocks(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
        self.ln_final = _layer_norm(cfg, rngs) if cfg.final_norm else None

    def run_trunk(
        self,
        x_BxTxD: jax.Array,
        positions_BxT: jax.Array,
        mask_BxTxT: jax.Array,
        capture: Capture,
        interventions: Interventions,
    ) -> tuple[jax.Array, tuple[LayerObservables, ...], jax.Array]:
        """(final hidden state after the final norm, per-layer observables, embeddings)."""
        if self.pos_embed is not None:  # learned positions
            x_BxTxD = x_BxTxD + self.pos_embed(positions_BxT)
        elif self.cfg.positions == "sinusoidal":
            x_BxTxD = x_BxTxD + sinusoidal_positions(positions_BxT, self.cfg.d_model)
        embeddings_BxTxD = x_BxTxD

        def run_block(block: Block, x_BxTxD: jax.Array, capture: Capture):
            return block(x_BxTxD, mask_BxTxT, positions_BxT, capture, interventions)

        if self.cfg.remat:
            run_block = nnx.remat(run_block, static_argnums=(2,))
        if self.cfg.scan_layers:
            if interventions != Interventions() or capture.layers is not None:
                raise ValueError(
                    "model.scan_layers runs every layer alike: interventions and "
                    "Capture(layers=...) need the unrolled model (scan_layers=False; "
                    "model.copy_parameters moves the weights over)"
                )

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
            def scan_body(x_BxTxD: jax.Array, block: Block):
                return run_block(block, x_BxTxD, capture)

            assert isinstance(self.blocks, Block)  # one block, parameters stacked over layers
            x_BxTxD, stacked = scan_body(x_BxTxD, self.blocks)
            n = self.cfg.n_layers
            layers = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(n)]
        else:
            assert isinstance(self.blocks, nnx.List)
            layers = []
            for i, block in enumerate(self.blocks):
                x_BxTxD, obs = run_block(block, x_BxTxD, capture.at(i))
                layers.append(obs)
        if self.ln_final is not None:
            x_BxTxD = self.ln_final(x_BxTxD)
        return x_BxTxD, tuple(layers), embeddings_BxTxD

    @staticmethod
    def output(out, layers, embeddings, capture: Capture) -> ModelOutput:
        if out.dtype == jnp.bfloat16:  # bf16 policy: logits / readouts (and the loss) in fp32
            out = out.astype(jnp.float32)
        if not capture.any:
            return ModelOutput(logits=out)
        return ModelOutput(
            logits=out, layers=layers, embeddings=embeddings if capture.residual else None
        )


def copy_parameters(source: DecoderTrunk, target: DecoderTrunk) -> None:
    """Copy `source`'s parameters into `target` (same shapes), stacking or unstacking the blocks
    when one of the two scans its layers: train with `scan_layers`, analyse layer by layer."""
    params = nnx.to_pure_dict(nnx.state(source, nnx.Param))
    n = source.cfg.n_layers
    if source.cfg.scan_layers and not target.cfg.scan_layers:
        stacked = params["blocks"]
        params["blocks"] = {i: jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(n)}
    elif target.cfg.scan_layers and not source.cfg.scan_layers:
        layers = [params["blocks"][i] for i in range(n)]
        params["blocks"] = jax.tree.map(lambda *a: jnp.stack(a), *layers)
    state = nnx.state(target, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(target, state)


class GPT(DecoderTrunk):
    """Decoder-only transformer (pre-LN by default; post-LN with `norm='post'`, none with
    `norm='none'`)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.token_embed = _embed(cfg, cfg.vocab_size, rngs)
        self.pos_embed = _embed(cfg, cfg.max_len, rngs) if cfg.positions == "learned" else None
        self.init_trunk(cfg, rngs)
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
        x_BxTxD, layers, embeddings = self.run_trunk(
            x_BxTxD, positions_BxT, mask_BxTxT, capture, interventions
        )
        head = self.token_embed.attend if self.head is None else self.head  # tied or not
        logits_BxTxV = head(x_BxTxD)
        chex.assert_shape(logits_BxTxV, (b, t, self.cfg.vocab_size))
        return self.output(logits_BxTxV, layers, embeddings, capture)


class VectorTransformer(DecoderTrunk):
    """The same trunk on continuous inputs: features [B,T,F] → linear embedding → blocks →
    linear readout [B,T,d_out] (for regression tasks such as catch-tag-release averaging).
    `cfg.vocab_size`, `tie_embeddings` and learned positions are not used; positions may be
    `sinusoidal`, `rope` or `none`."""

    def __init__(self, cfg: ModelConfig, n_features: int, d_out: int, *, rngs: nnx.Rngs):
        if cfg.positions == "learned":
            raise ValueError("VectorTransformer: use positions 'none', 'sinusoidal' or 'rope'")
        self.cfg = cfg
        self.embed = _dense(cfg, n_features, cfg.d_model, rngs)
        self.init_trunk(cfg, rngs)
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
        x_BxTxD, layers, embeddings = self.run_trunk(
            self.embed(features_BxTxF), positions_BxT, mask_BxTxT, capture, interventions
        )
        return self.output(self.readout(x_BxTxD), layers, embeddings, capture)
