"""Frozen, validated configuration dataclasses and `--set field=value` overrides.

Every training run is a `RunConfig` (model, optimiser, training schedule, seed); a task extends it
with its data config (in `sinks_jax.tasks`: `bigram_backcopy.config.BBConfig.data: BBDataConfig`,
`lm.LMConfig.data: CorpusConfig`, `averaging.AveragingExperimentConfig.data: AveragingConfig`).
An experiment that trains several runs keeps its own parameters in a `sweep` group
(`--set sweep.n_seeds=3`), and `run_config(cfg)` is the plain run config without it. Presets are
plain instances. Invalid values raise `ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeGuard

from sinks_jax.errors import ConfigError

POSITIONS = ("learned", "sinusoidal", "rope", "none")
NORMS = ("pre", "post", "none")  # "none": no LayerNorm in the blocks
ACTIVATIONS = ("relu", "gelu")
DECAY_PARAMS = ("all", "matrices")  # which parameters weight decay applies to
INITS = ("torch", "gpt2")
COMPUTE_DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine")


def require(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"invalid config value {field}={value!r}: allowed {allowed}")


def require_positive(obj: Any, *names: str, prefix: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(value > 0, f"{prefix}.{name}", value, "a positive number")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only GPT (see `sinks_jax.model`)."""

    vocab_size: int = 67  # 0: derived from the task's data (the LM configs: the tokenizer)
    max_len: int = 64  # number of learned / sinusoidal positions
    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 1
    d_mlp: int = 256
    positions: str = "learned"
    norm: str = "pre"
    final_norm: bool = True
    attention: str = "softmax"
    mlp_activation: str = "relu"
    tie_embeddings: bool = False
    use_bias: bool = True
    init: str = "torch"
    layers_without_attention: tuple[int, ...] = ()
    layers_without_mlp: tuple[int, ...] = ()
    rope_base: float = 10000.0
    # Precision policy: "bfloat16" runs the matmuls in bf16 (float32 accumulation) while the
    # parameters, optimiser state, LayerNorm, attention softmax, residual stream and loss stay in
    # float32; "float32" (the default, and what every CPU preset uses) computes everything in fp32.
    compute_dtype: str = "float32"
    # Softmax attention through `jax.nn.dot_product_attention` (cuDNN flash attention on a GPU)
    # wherever nothing inside the attention is captured or edited; the explicit path otherwise.
    fused_attention: bool = False
    # Deep models: the blocks' parameters stacked on a leading layer axis and run by one scanned
    # block (compile time independent of depth; identical layers only, no interventions), and
    # `remat` to recompute each block's activations in the backward pass instead of storing them.
    scan_layers: bool = False
    remat: bool = False

    def __post_init__(self) -> None:
        from sinks_jax.attention import ATTENTION_VARIANTS  # local: avoids an import cycle

        require_positive(self, "max_len", "d_model", "n_layers", "n_heads", "d_mlp", prefix="model")
        require(self.vocab_size >= 0, "model.vocab_size", self.vocab_size, "an integer >= 0")
        require(
            self.d_model % self.n_heads == 0,
            "model.n_heads",
            self.n_heads,
            f"a divisor of model.d_model={self.d_model}",
        )
        require(self.positions in POSITIONS, "model.positions", self.positions, str(POSITIONS))
        require(self.norm in NORMS, "model.norm", self.norm, str(NORMS))
        require(
            self.attention in ATTENTION_VARIANTS,
            "model.attention",
            self.attention,
            str(tuple(ATTENTION_VARIANTS)),
        )
        require(
            self.mlp_activation in ACTIVATIONS,
            "model.mlp_activation",
            self.mlp_activation,
            str(ACTIVATIONS),
        )
        require(self.init in INITS, "model.init", self.init, str(INITS))
        require(
            self.compute_dtype in COMPUTE_DTYPES,
            "model.compute_dtype",
            self.compute_dtype,
            str(COMPUTE_DTYPES),
        )
        if self.positions == "rope":
            require(
                (self.d_model // self.n_heads) % 2 == 0,
                "model.positions",
                self.positions,
                "'rope' only with an even head dimension",
            )
        require(
            not (self.scan_layers and (self.layers_without_attention or self.layers_without_mlp)),
            "model.scan_layers",
            self.scan_layers,
            "False when layers differ (layers_without_attention / layers_without_mlp)",
        )
        for name in ("layers_without_attention", "layers_without_mlp"):
            for layer in getattr(self, name):
                require(
                    0 <= layer < self.n_layers,
                    f"model.{name}",
                    getattr(self, name),
                    f"layer indices in [0, {self.n_layers})",
                )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """optax optimiser. `decay_params='all'` decays every parameter, as torch.optim.AdamW does
    by default (every preset uses it); `'matrices'` decays only parameters with >= 2 dimensions
    (weights and embeddings, not LayerNorm scales or biases: the nanoGPT convention)."""

    name: str = "adamw"
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # global-norm clip; 0 disables
    decay_params: str = "all"

    def __post_init__(self) -> None:
        require(self.name in OPTIMIZERS, "optim.name", self.name, str(OPTIMIZERS))
        require(
            self.decay_params in DECAY_PARAMS,
            "optim.decay_params",
            self.decay_params,
            str(DECAY_PARAMS),
        )
        require(self.schedule in SCHEDULES, "optim.schedule", self.schedule, str(SCHEDULES))
        require_positive(self, "lr", "eps", prefix="optim")
        for name in ("b1", "b2", "momentum"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"optim.{name}", value, "a number in [0, 1)")
        for name in ("weight_decay", "grad_clip", "warmup_steps"):
            value = getattr(self, name)
            require(value >= 0, f"optim.{name}", value, "a number >= 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    eval_every: int = 50
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    progress: bool = True
    devices: int = 0  # data-parallel devices; 0 = all local devices that divide the batch
    fsdp: bool = False  # shard parameters and optimiser state over the devices (else replicated)
    microbatches: int = 1  # gradient accumulation: the batch is split into this many parts

    def __post_init__(self) -> None:
        require(self.steps >= 0, "train.steps", self.steps, "an integer >= 0")
        require_positive(
            self,
            "eval_every",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
            "microbatches",
            prefix="train",
        )
        require(self.devices >= 0, "train.devices", self.devices, "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every training run has; a task's config extends it with `data` (and its own fields).

    A new task needs a data config (a frozen dataclass with `batch_size`), a subclass of this
    with `data: YourDataConfig = YourDataConfig()`, a batch function `step -> batch` and a loss
    `(model, batch) -> scalar`; `sinks_jax.train.train` does the rest."""

    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.seed, int), "seed", self.seed, "an integer")


class DataConfig(Protocol):
    """What the train loop reads of a task's data config."""

    @property
    def batch_size(self) -> int: ...


class TaskConfig(Protocol):
    """A `RunConfig` whose task added its `data` config: what `train.train` takes."""

    @property
    def model(self) -> ModelConfig: ...
    @property
    def optim(self) -> OptimConfig: ...
    @property
    def train(self) -> TrainConfig: ...
    @property
    def seed(self) -> int: ...
    @property
    def data(self) -> DataConfig: ...


def check_sink_eps(eps: tuple[float, ...]) -> None:
    require(len(eps) > 0 and all(0.0 < e < 1.0 for e in eps), "sink_eps", eps, "numbers in (0, 1)")


def run_config(cfg: RunConfig) -> RunConfig:
    """`cfg` as a plain run config: an experiment's config without its `sweep` group (an
    instance of the nearest base class that has none), `cfg` itself when it has none."""
    if not any(f.name == "sweep" for f in dataclasses.fields(cfg)):
        return cfg
    for base in type(cfg).__mro__[1:]:
        if issubclass(base, RunConfig) and "sweep" not in {
            f.name for f in dataclasses.fields(base)
        }:
            return base(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(base)})
    raise TypeError(f"{type(cfg).__name__} has no base config without a sweep group")


# ---------------------------------------------------------------------------------------------
# Serialisation and overrides


def _is_group(hint: Any) -> TypeGuard[type]:
    """A nested config dataclass (a group of fields such as `model`), not a leaf value."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict view of a config (tuples become lists), for JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Inverse of `to_dict`: rebuild (and so re-validate) a config dataclass."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        value, hint = data[field.name], hints[field.name]
        hint = _without_none(hint) if value is not None else hint
        if _is_group(hint):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def field_paths(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted path, type name, default) for every leaf field; used by `--help`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if _is_group(hint):
            rows += field_paths(hint, f"{prefix}{field.name}.")
        else:
            rows.append((prefix + field.name, _type_name(hint), field.default))
    return rows


def leaf_defaults(cls: type) -> dict[str, Any]:
    """{dotted path: the field's default, as JSON would hold it} for every leaf of `cls`: what a
    config saved before a field was added means by its absence (the behaviour it had)."""
    return {
        path: json.loads(json.dumps(default))
        for path, _, default in field_paths(cls)
        if default is not dataclasses.MISSING
    }


def _without_none(hint: Any) -> Any:
    """`X` for an optional field's `X | None`, else the hint itself."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return hint


def _type_name(hint: Any) -> str:
    if _without_none(hint) is not hint:
        return f"{_type_name(_without_none(hint))} | None"
    if typing.get_origin(hint) is tuple:
        return f"tuple[{_type_name(typing.get_args(hint)[0])},...]"
    return getattr(hint, "__name__", str(hint))


SEED_MAX = 2**31 - 1  # seeds feed numpy, JAX and `seed + k` for sweeps: keep them int32


def _parse_scalar(hint: Any, text: str) -> Any:
    text = text.strip()
    if hint is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError
        return lowered in ("true", "1", "yes")
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)  # inf and nan parse; `validated` refuses them with the field's name
    return text


def _parse_value(path: str, hint: Any, text: str) -> Any:
    if _without_none(hint) is not hint:  # an optional field: "None" or a value of its type
        if text.strip().lower() in ("none", "null"):
            return None
        return _parse_value(path, _without_none(hint), text)
    try:
        if typing.get_origin(hint) is tuple:  # tuple[T, ...]: "0,2", "(0,2)", "[0, 2]", "()"
            element = typing.get_args(hint)[0]
            inner = text.strip()
            if inner[:1] + inner[-1:] in ("()", "[]"):
                inner = inner[1:-1]
            if any(c in inner for c in "()[]{}"):
                raise ValueError
            parts = [p.strip() for p in inner.split(",")] if inner.strip() else []
            if any(not p for p in parts):
                raise ValueError
            return tuple(_parse_scalar(element, p) for p in parts)
        return _parse_scalar(hint, text)
    except ValueError:
        raise ConfigError(f"cannot parse --set {path}={text!r} as {_type_name(hint)}") from None


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply `field.sub=value` strings (the `--set` flag) to a frozen config.

    Every override is parsed and set first; the final config is then built and validated once,
    so the result never depends on the order of the overrides.
    """
    data = dataclasses.asdict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects field=value, got {item!r} (e.g. model.n_layers=3)")
        path, text = item.split("=", 1)
        path = path.strip()
        _set_path(type(cfg), data, path.split("."), text, path)
    return validated(from_dict(type(cfg), data))


def validated(cfg: Any) -> Any:
    """Checks every config shares (the dataclasses check their own fields when built): seeds
    in [0, 2^31 - 1], finite floats."""
    for path, value in _leaves(cfg):
        name = path.rsplit(".", 1)[-1]
        if name == "seed" and isinstance(value, int):
            require(0 <= value <= SEED_MAX, path, value, f"an integer in [0, {SEED_MAX}]")
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float):
                require(math.isfinite(v), path, value, "a finite number")
    return cfg


def _leaves(cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            out += _leaves(value, f"{prefix}{field.name}.")
        else:
            out.append((prefix + field.name, value))
    return out


def _set_path(cls: type, data: dict[str, Any], parts: list[str], text: str, full: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    head = parts[0]
    if head not in names:
        known = ", ".join(p for p, _, _ in field_paths(cls))
        raise ConfigError(f"unknown config field {full!r}; known fields: {known}")
    hint = typing.get_type_hints(cls)[head]
    if len(parts) == 1:
        if _is_group(hint):
            raise ConfigError(f"{full!r} is a group; set one of its fields, e.g. {full}.<field>")
        data[head] = _parse_value(full, hint, text)
    else:
        if not _is_group(hint):
            raise ConfigError(f"unknown config field {full!r}")
        _set_path(hint, data[head], parts[1:], text, full)
