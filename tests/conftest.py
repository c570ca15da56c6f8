"""Settings for the whole test session.

Most of a test's time on CPU is XLA compiling small programs, and most of that is LLVM optimising
the generated code. The tests run with LLVM optimisation level 0 (`--xla_backend_optimization_level
=0`), which roughly halves compile time. The HLO passes (fusion, dead-code elimination, layout)
still run, so the programs the tests inspect are the same; float results move by ~1e-7 relative
(the golden tests' rtol is 1e-5). A level already given in XLA_FLAGS is kept.
"""

import os

_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _FLAGS:
    os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_backend_optimization_level=0".strip()
