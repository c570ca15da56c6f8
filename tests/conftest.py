"""Settings for the whole test session.

Most of a fast test's time on CPU is XLA compiling small programs, and most of that is LLVM
optimising the generated code. The default run (`-m 'not slow'`) therefore uses LLVM optimisation
level 0 (`--xla_backend_optimization_level=0`), which roughly halves compile time. The HLO passes
(fusion, dead-code elimination, layout) still run, so the programs the tests inspect are the same;
float results move by ~1e-7 relative (the golden tests' rtol is 1e-5). A run that can select the
slow tests (thousands of training steps, where run time outweighs compile time) keeps XLA's
default, as does a level already given in XLA_FLAGS.
"""

import os


def pytest_configure(config):
    flags = os.environ.get("XLA_FLAGS", "")
    if "not slow" in (config.option.markexpr or "") and "optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
