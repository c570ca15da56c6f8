"""One cached, jit-compiled forward path for analyses (the training step has its own).

    out = apply(model, tokens_BxT, capture=Capture(attention=True))     # ModelOutput
    summary = jit_with_model(my_metrics)(model, batch)                  # any fn(model, ...)

Both split the NNX model into (graphdef, state), compile once per model structure, input shapes
and static options (`capture`, `interventions`, other keyword options marked static), and merge
inside the compiled function: no model is rebuilt and no Python forward pass runs eagerly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
from flax import nnx

from sinks_jax.model import Capture, Interventions, ModelOutput

R = TypeVar("R")


def jit_with_model(
    fn: Callable[..., R], *, static_argnames: tuple[str, ...] = ()
) -> Callable[..., R]:
    """`fn(model, *arrays, **kwargs)` compiled with the model passed functionally; keyword
    arguments named in `static_argnames` are static (hashable), the rest are pytrees."""

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def pure(graphdef, state, args, kwargs, static_items):
        return fn(nnx.merge(graphdef, state), *args, **kwargs, **dict(static_items))

    @functools.wraps(fn)
    def wrapper(model: nnx.Module, *args: Any, **kwargs: Any) -> R:
        graphdef, state = nnx.split(model)
        static = tuple(sorted((k, kwargs.pop(k)) for k in static_argnames if k in kwargs))
        return pure(graphdef, state, args, kwargs, static)

    return wrapper


def _call(model: nnx.Module, *inputs: Any, **kwargs: Any) -> ModelOutput:
    return model(*inputs, **kwargs)


_apply = jit_with_model(_call, static_argnames=("capture", "interventions"))


def apply(
    model: nnx.Module,
    *inputs: Any,
    capture: Capture = Capture(),
    interventions: Interventions = Interventions(),
    **kwargs: Any,
) -> ModelOutput:
    """`model(*inputs, capture=..., interventions=..., **kwargs)`, jit-compiled and cached.
    Array keyword arguments (`segment_ids_BxT`, `positions_BxT`, ...) may be None."""
    return _apply(model, *inputs, capture=capture, interventions=interventions, **kwargs)
