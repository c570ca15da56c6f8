"""Regenerate every figure and claim: run each experiment and proof module with one preset.

    python -m experiments.all --preset quick            # every module, CPU presets
    python -m experiments.all --only lm_sinks,over_mixing
    python -m experiments.all --list
    python -m experiments.all --preset gpu --jobs 3   # three module processes at a time

Each module runs in its own process (as `python -m <module> --preset P --out DIR/<name>`), so one
failure does not stop the others. A module without the preset (e.g. `text`, which only the
small-GPT modules have) is skipped. At the end the claims of every module are summarised in
`DIR/summary.md` (default DIR: results/all/<preset>), and `DIR/report.html` shows every claim,
figure, config, wall time and the environment on one page (`sinks_jax.report_html`).

Ctrl-C (or SIGTERM, or SIGHUP) stops the scheduling: the running modules get one SIGINT each
(their run folders say 'interrupted' and keep their checkpoints for `--resume`; SIGTERM and then
SIGKILL follow a minute apart for a module that does not end), the queued ones do not start, and
the summary and report.html show what finished; exit 130 (143 for SIGTERM). A second Ctrl-C
kills the running modules at once.

`--jobs N` runs N module processes at a time (for many cores or a large GPU); each then writes
its output to `DIR/<module>.log`, and on a GPU takes at most 1/N of its memory
(`XLA_PYTHON_CLIENT_PREALLOCATE=false`, `XLA_PYTHON_CLIENT_MEM_FRACTION`). On 2 CPU cores keep
the default of one: each module's XLA program already uses both cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sinks_jax.errors import OutputError, signals_raise
from sinks_jax.run_dir import atomic_write_text, check_out_dir

MODULES = (
    "experiments.bigram_backcopy",
    "experiments.residual_peak",
    "experiments.optimizer_mitigations",
    "experiments.two_domain_heads",
    "proofs_numeric.mutual_reinforcement",
    "proofs_numeric.adam_vs_sgd_peak",
    "proofs_numeric.ctr_construction",
    "proofs_numeric.one_layer_cannot_average",
    "experiments.ctr_emergence",
    "experiments.ctr_low_rank",
    "experiments.sink_free_averaging",
    "proofs_numeric.over_mixing",
    "experiments.lm_sinks",
    "experiments.context_length_sweep",
    "experiments.depth_sweep",
    "experiments.depth_design",
    "experiments.packing_sweep",
    "experiments.text_sink_search",
    "experiments.attention_variants",
    "experiments.lm_phenomenology",
)


def short_name(module: str) -> str:
    return module.rsplit(".", 1)[1]


def presets_of(module: str) -> list[str]:
    import importlib

    return list(importlib.import_module(module).EXPERIMENT.presets)


def presets_or_error(module: str) -> list[str] | str:
    """The module's presets, or the one-line reason it cannot be imported."""
    try:
        return presets_of(module)
    except Exception as e:  # any failure is reported per module; the others still run
        return f"import failed: {type(e).__name__}: {e}"


class UsageError(Exception):
    """Bad input to `experiments.all`: one line on stderr, exit 2."""


def select(only: str | None) -> list[str]:
    if only is None:
        return list(MODULES)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {short_name(m): m for m in MODULES}
    if not wanted:
        raise UsageError(f"--only {only!r} names no module; known: {', '.join(known)}")
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UsageError(f"unknown module(s) {unknown}; known: {', '.join(known)}")
    if twice := sorted({w for w in wanted if wanted.count(w) > 1}):
        raise UsageError(f"--only names {', '.join(twice)} more than once; name each module once")
    return [known[w] for w in wanted]


def summarise(out_root: Path, modules: list[str], status: dict[str, str]) -> str:
    lines = ["| module | status | claims passed | wall time (s) |", "|---|---|---|---|"]
    for m in modules:
        name = short_name(m)
        path = out_root / name / "metrics.json"
        passed, wall = "—", "—"
        if status[m] == "ok" and path.exists():
            metrics = json.loads(path.read_text())
            claims = metrics.get("claims", [])
            passed = f"{sum(c['passed'] for c in claims)}/{len(claims)}"
            if n_undefined := sum("undefined" in c for c in claims):
                passed += f" ({n_undefined} undefined)"
            wall = f"{metrics.get('wall_time_s', 0):.0f}"
        lines.append(f"| {name} | {status[m]} | {passed} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="quick", help="preset for every module (default quick)")
    parser.add_argument("--only", default=None, help="comma-separated module names")
    parser.add_argument("--out", default=None, help="default: results/all/<preset>")
    parser.add_argument("--list", action="store_true", help="list the modules and their presets")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="module processes at a time (default 1; more for many cores or a large GPU)",
    )
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise UsageError(f"--jobs {args.jobs}: give a number of processes >= 1")
        modules = select(args.only)
        if args.list:
            for m in modules:
                print(f"{m:42s} presets: {', '.join(presets_of(m))}")
            return 0
        out_root, presets = prepare(modules, args.preset, args.out)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()  # set by Ctrl-C: no further module starts
    queue = list(modules)  # in order; each worker takes the next

    def run_one(m: str) -> str:
        module_presets = presets[m]
        if isinstance(module_presets, str):  # the module did not import: its error
            return module_presets
        if args.preset not in module_presets:
            return f"no '{args.preset}' preset"
        return run_module(m, args.preset, out_root, args.jobs)

    def worker() -> None:
        # started with DEFERRED_SIGNALS held back (`_signals_deferred`); unblocked here, or the
        # module processes started from this thread would inherit the mask and ignore Ctrl-C
        signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)
        try:
            work()
        finally:
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    all_done.set()

    def work() -> None:
        while True:
            with lock:
                if stop.is_set() or not queue:
                    return
                m = queue.pop(0)
            try:
                result = run_one(m)
            except Exception as err:  # a bug here must not pass for 'not run'
                result = f"failed: {type(err).__name__}: {err}"
            with lock:
                status[m] = result
                write_summary(out_root, args.preset, modules, status)  # kept up to date

    interrupted = 0
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.jobs)]
    # the workers still running, and an event set when none is: Thread.join is not safe to
    # interrupt and join again (its thread can pass for ended)
    running, all_done = [len(threads)], threading.Event()
    CHILDREN.reopen()
    # SIGTERM and SIGHUP end the modules (in process groups of their own) as Ctrl-C does,
    # rather than orphaning them
    with signals_raise(_Stopped, signal.SIGTERM, signal.SIGHUP) as stop_landed:
        try:
            with _signals_deferred():  # a Ctrl-C now waits until every worker has started
                for t in threads:
                    t.start()
            all_done.wait()
        except KeyboardInterrupt as err:
            stop_landed.set()  # a SIGTERM or SIGHUP need not be sent again
            interrupted = 128 + getattr(err, "signum", signal.SIGINT)
            stop.set()
            print("\n[all] interrupted: ending the running module(s); none starts", flush=True)
            _end_children(all_done)
        try:
            for m in modules:
                status.setdefault(m, NOT_RUN)
            write_summary(out_root, args.preset, modules, status)
            print(summarise(out_root, modules, status))
            write_report_html(out_root, args.preset, modules, status)
        except KeyboardInterrupt as err:  # once more while writing what finished
            print("[all] interrupted while writing the summary and report", file=sys.stderr)
            return interrupted or 128 + getattr(err, "signum", signal.SIGINT)
    if interrupted:
        return interrupted
    return 0 if all(s == "ok" or s.startswith("no ") for s in status.values()) else 1


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """DEFERRED_SIGNALS (SIGINT, SIGTERM, SIGHUP) held back in this thread (delivered on
    leaving), so that Ctrl-C does not land half-way through starting the workers."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _end_children(done: threading.Event) -> None:
    """End the module processes (`Children.interrupt_all`) and wait for the workers; a further
    Ctrl-C or SIGTERM kills the processes outright instead of waiting out their grace."""
    while True:
        try:
            CHILDREN.interrupt_all()
            done.wait()
            return
        except KeyboardInterrupt:
            CHILDREN.kill_all()


NOT_RUN = "not run (interrupted)"
DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal), handled as Ctrl-C is (exit 128 + `signum`)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


class Children:
    """The module processes now running, so that Ctrl-C can end them. Each runs in a process
    group of its own, so a terminal's Ctrl-C reaches only this orchestrator, which then sends
    each module one SIGINT (it marks its run folder 'interrupted' and keeps its checkpoints; a
    second SIGINT could cut that short), SIGTERM after `grace_s` (for a module that started with
    SIGINT ignored, as under `nohup … &`; it marks its folder 'terminated') and SIGKILL after
    as long again. Once `interrupt_all` has run no new process starts (until `reopen`)."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `interrupt_all` (or `kill_all`) has run: no new module starts."""
        return self._closed

    def reopen(self) -> None:
        """Let processes start again (a new `experiments.all` run in this process)."""
        with self._lock:
            self._closed = False

    def run(self, cmd: list[str], **popen: Any) -> int | None:
        """`subprocess.call`, with the process known while it runs; None (nothing started)
        once `interrupt_all` has run."""
        with self._lock:  # checked and started under the lock: none slips past an interrupt
            if self._closed:
                return None
            proc = subprocess.Popen(cmd, process_group=0, **popen)
            self._procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def interrupt_all(self, grace_s: float = 60.0) -> None:
        """SIGINT to every running module, then SIGTERM, then SIGKILL, `grace_s` apart, each
        only to those still running; no new module starts after this."""
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
            deadline = time.monotonic() + grace_s
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))

    def kill_all(self) -> None:
        """SIGKILL to every running module (a second Ctrl-C: no more waiting)."""
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


CHILDREN = Children()


def prepare(
    modules: list[str], preset: str, out: str | None
) -> tuple[Path, dict[str, list[str] | str]]:
    """The output folder (created) and each module's presets, or UsageError before anything
    runs: an unusable folder, or a preset none of the selected modules has."""
    try:
        out_root = check_out_dir(Path("results") / "all" / preset if out is None else out)
    except OutputError as err:
        raise UsageError(str(err)) from None
    # Presets are read once, before anything runs: edits to the sources during a long run only
    # reach the module processes, and a module that does not import is reported, not fatal.
    presets = {m: presets_or_error(m) for m in modules}
    known = sorted({p for ps in presets.values() if not isinstance(ps, str) for p in ps})
    if known and preset not in known:
        raise UsageError(f"no selected module has a preset {preset!r}; presets: {', '.join(known)}")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {out_root}: {err.strerror}") from None
    return out_root, presets


def _env_with_checkout() -> dict[str, str]:
    """The environment with this checkout on PYTHONPATH: `experiments` and `proofs_numeric` are
    not installed, so the module processes find them from any working directory."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _env_for_jobs(jobs: int) -> dict[str, str]:
    """A module process's environment when `jobs` run at once: each takes its share of a GPU's
    memory instead of JAX's default 75 % (two such processes would run out of memory)."""
    env = _env_with_checkout()
    if jobs > 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / jobs:.3f}")
    return env


def run_module(module: str, preset: str, out_root: Path, jobs: int = 1) -> str:
    """Run one module in its own process; its status: 'ok' or 'exit N'. With several jobs its
    output goes to `out_root/<module>.log` instead of the terminal."""
    out = out_root / short_name(module)
    cmd = [sys.executable, "-m", module, "--preset", preset, "--out", str(out)]
    print(f"[all] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    if jobs == 1:
        rc = CHILDREN.run(cmd, env=_env_for_jobs(jobs))
    else:
        with open(out_root / f"{short_name(module)}.log", "w") as log:
            rc = CHILDREN.run(cmd, env=_env_for_jobs(jobs), stdout=log, stderr=subprocess.STDOUT)
    status = NOT_RUN if rc is None else module_status(rc)
    print(f"[all] {short_name(module)}: {status} in {time.perf_counter() - t0:.0f} s", flush=True)
    return status


def module_status(rc: int) -> str:
    """A module process's status from its exit code (negative: killed by that signal)."""
    if rc == 0:
        return "ok"
    if rc in (130, -signal.SIGINT):
        return "interrupted"
    if rc in (143, -signal.SIGTERM):
        return "terminated"
    return f"exit {rc}"


def write_summary(out_root: Path, preset: str, modules: list[str], status: dict[str, str]) -> None:
    done = [m for m in modules if m in status]
    table = summarise(out_root, done, status)
    atomic_write_text(out_root / "summary.md", f"# All modules [{preset}]\n\n{table}\n")


def write_report_html(
    out_root: Path, preset: str, modules: list[str], status: dict[str, str]
) -> None:
    """`DIR/report.html` beside summary.md (figures linked relative to the page)."""
    from sinks_jax import report_html
    from sinks_jax.errors import SinksJaxError

    try:
        page = report_html.write(
            out_root,
            preset=preset,
            status={short_name(m): status[m] for m in modules},
            title=f"All modules [{preset}]",
        )
    except SinksJaxError as err:  # e.g. a module left a malformed metrics.json
        print(f"[all] no report.html: {err}", file=sys.stderr, flush=True)
        return
    print(f"[all] report: {page}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
