"""Settings for the whole test session (none changes what a test checks).

Most of a fast test's time on CPU is XLA compiling small programs:

- the default run (`-m 'not slow'`) compiles with LLVM optimisation level 0
  (`--xla_backend_optimization_level=0`), which roughly halves compile time. The HLO passes
  (fusion, dead-code elimination, layout) still run, so the programs the tests inspect are the
  same; float results move by ~1e-7 relative (the golden tests' rtol is 1e-5). A run that can
  select the slow tests (thousands of training steps, where run time outweighs compile time)
  keeps XLA's default, as does a level already given in XLA_FLAGS;
- every run keeps a session-scoped persistent compilation cache (a temporary folder, removed at
  the end, shared with the tests' subprocesses): the many runs that compile the same program
  (same model, shapes and flags) compile it once.
"""

import os
import shutil
import tempfile

_CACHE: list[str] = []


def pytest_configure(config):
    flags = os.environ.get("XLA_FLAGS", "")
    default_run = " ".join((config.option.markexpr or "").split()) == "not slow"
    if default_run and "optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        import jax

        _CACHE.append(tempfile.mkdtemp(prefix="sinks_jax_tests_xla_cache_"))
        settings = {
            "jax_compilation_cache_dir": _CACHE[0],
            "jax_persistent_cache_min_compile_time_secs": 0,
            "jax_persistent_cache_min_entry_size_bytes": 0,
        }
        for name, value in settings.items():
            jax.config.update(name, value)
            os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
    for folder in _CACHE:
        shutil.rmtree(folder, ignore_errors=True)
