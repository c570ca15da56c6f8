"""sinks_jax: attention sinks in JAX/Flax (Guo et al. 2024; Zhang, Khan, Papyan 2025; Barbero et
al. 2025). Importing the package sets one XLA:CPU default (`xla_flags`)."""

from sinks_jax import xla_flags

xla_flags.apply_cpu_defaults()
