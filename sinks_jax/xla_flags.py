"""XLA:CPU defaults this package sets before JAX starts its CPU backend.

`--xla_cpu_experimental_ynn_fusion_type=` (empty: no YNNPACK fusions): on the 2-core CPU machine
the quick presets' models (d_model 64, T 64, batch 64) train 1.4–1.6× faster without them: the
Bigram-Backcopy quick step 35 → 21–25 ms, the d 64 benchmark row 0.52–0.58 → 0.76–0.78 of
PyTorch eager; at d 256 it changes nothing (BENCHMARKS.md, History). GPU and TPU backends ignore it.

It is appended to `XLA_FLAGS` unless that already names the flag (yours wins) or
`SINKS_JAX_XLA_DEFAULTS=0`. It only takes effect if the package is imported before JAX's first
computation in the process (every entry point of this package does so).
"""

from __future__ import annotations

import os

CPU_DEFAULTS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def apply_cpu_defaults() -> None:
    if os.environ.get("SINKS_JAX_XLA_DEFAULTS", "1") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in CPU_DEFAULTS if f.split("=")[0] not in flags]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
