"""Runs that lose nothing: output folders, the run lock, resume rules, damaged checkpoints, bad
input. Runs go through the real CLI (`cli.main(argv)` of `tests.tiny_experiment`: argument
parsing, the run folder, the training loop) in this process, a second or so a run; the promises
that are about processes (a lock held by another live process, a SIGKILL in the middle of a
checkpoint save, the lock's exclusion between processes) use real subprocesses."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks_jax import cli, run_dir
from sinks_jax.errors import OutputError
from tests import tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@dataclasses.dataclass
class Ran:
    """What `python -m tests.tiny_experiment ARGS` would give: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def _tiny(*args: str, cwd: Path | None = None) -> Ran:
    """`tests.tiny_experiment`'s command line, run in this process from `cwd`."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(tiny_experiment.EXPERIMENT, list(args))
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code
    finally:
        os.chdir(before)
    return Ran(code, out.getvalue(), err.getvalue())


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _one_line_error(proc: Ran) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# 1. Output folders


@pytest.mark.parametrize("out", [".", "", "..", "sub/.."])
def test_out_naming_the_current_folder_or_a_parent_moves_nothing(tmp_path, out):
    # A repository two levels down, so that even a regression moves nothing outside tmp_path.
    repo = tmp_path / "outer" / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "README.md").write_text("mine\n")
    (repo / "sub").mkdir()
    before = _tree(tmp_path)
    line = _one_line_error(_tiny("--out", out, cwd=repo))
    assert "current folder" in line or "--out is empty" in line
    assert _tree(tmp_path) == before
    assert not list(tmp_path.rglob("archive"))


def test_a_fresh_run_refuses_a_foreign_folder_and_archives_only_a_run_folder(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    line = _one_line_error(_tiny("--out", str(foreign)))
    assert "not a sinks_jax run folder" in line
    assert "notes.txt" in line
    assert _tree(foreign) == {"notes.txt": b"keep me"}

    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0
    first = _tree(out)
    assert _tiny("--out", str(out)).returncode == 0
    (archived,) = (out / "archive").iterdir()
    assert _tree(archived) == first  # the whole previous run, byte for byte
    assert run_dir.read_mark(out)["status"] == "complete"


@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_out_naming_a_file_or_a_path_under_a_file_is_one_line(tmp_path, kind):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" if kind == "file" else tmp_path / "a_file" / "run"
    line = _one_line_error(_tiny("--out", str(out)))
    assert "a_file" in line
    assert (tmp_path / "a_file").read_text() == "x"


def test_an_unwritable_out_is_one_line():
    line = _one_line_error(_tiny("--out", "/proc/sinks_jax_test/run"))
    assert "cannot create output folder" in line


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_runs_lock_is_taken_over(
    tmp_path,
):
    out, go = tmp_path / "run", tmp_path / "go"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.tiny_experiment",
            "--out",
            str(out),
            "--set",
            f"wait_for={go}",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts Python + JAX slowly
        while not (out / run_dir.LOCK).exists() or not (out / run_dir.LOCK).read_text():
            assert time.monotonic() < deadline
            assert first.poll() is None
            time.sleep(0.05)
        line = _one_line_error(_tiny("--out", str(out)))
        assert f"pid {first.pid}" in line
        assert "in use by another run" in line
        line = _one_line_error(_tiny("--out", str(out), "--resume"))
        assert f"pid {first.pid}" in line
        assert not (out / "archive").exists()
        assert not (out / "metrics.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The dead run's lock file is still there; the kernel has dropped its flock.
    assert json.loads((out / run_dir.LOCK).read_text())["pid"] == first.pid
    proc = _tiny("--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        f"taking over the lock of a run that is no longer running (pid {first.pid}" in proc.stdout
    )
    assert not (out / run_dir.LOCK).exists()  # released at the end


def test_the_lock_is_exclusive_within_one_machine(tmp_path):
    with run_dir.RunLock(tmp_path).acquire():
        child = subprocess.run(
            [sys.executable, "-c", "from sinks_jax import run_dir; import sys; "
             f"run_dir.RunLock(__import__('pathlib').Path({str(tmp_path)!r})).acquire()"],
            capture_output=True, text=True, env=ENV, timeout=60,
        )  # fmt: skip
        assert child.returncode != 0
        assert f"pid {os.getpid()}" in child.stderr


# ---------------------------------------------------------------------------------------------
# 2. Resume is exact or refuses


@pytest.fixture(scope="module")
def uninterrupted_30(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    proc = _tiny("--out", str(out), "--steps", "30")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _metrics(out)


KILL_DURING_SAVE = """
import os, signal, sys
from sinks_jax import checkpoint
save = checkpoint.Checkpointer.save
def save_then_die(self, step, state, *, force=False):
    saved = save(self, step, state, force=force)
    if step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # the async save is still being written
    return saved
checkpoint.Checkpointer.save = save_then_die
from tests import tiny_experiment
sys.exit(tiny_experiment.main(tiny_experiment.EXPERIMENT))
"""


def test_sigkill_during_a_checkpoint_save_then_resume_is_bitwise_exact(tmp_path, uninterrupted_30):
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, "--out", str(out), "--steps", "30"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**ENV, "KILL_AT": "20"},
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    proc = _tiny("--out", str(out), "--steps", "30", "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = _metrics(out)
    assert resumed["resumed_from"] in (10, 20)
    assert resumed["params_sha256"] == uninterrupted_30["params_sha256"]
    assert resumed["logged_steps"] == uninterrupted_30["logged_steps"]  # nothing lost or doubled


def _truncate_arrays(step_dir: Path) -> None:
    files = [p for p in step_dir.rglob("*") if p.is_file() and "/d/" in p.as_posix()]
    assert files, sorted(step_dir.rglob("*"))
    for p in files:
        os.truncate(p, p.stat().st_size // 2)


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted_30):
    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0  # steps 10 and 20 saved
    _truncate_arrays(out / "checkpoints" / "20")
    proc = _tiny("--out", str(out), "--steps", "30", "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "checkpoint step 20" in proc.stdout
    assert "damaged" in proc.stdout
    assert "resumed from step 10" in proc.stdout
    assert _metrics(out)["params_sha256"] == uninterrupted_30["params_sha256"]
    (moved,) = (out / "checkpoints.damaged").iterdir()  # set aside, not deleted
    assert moved.name.startswith("20")


@pytest.mark.parametrize("damage", ["arrays", "every file"])
def test_no_intact_checkpoint_is_one_line(tmp_path, damage, caplog):
    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0
    for step in ("10", "20"):
        if damage == "arrays":
            _truncate_arrays(out / "checkpoints" / step)
        else:  # metadata too: orbax logs its own error on listing the steps (dropped)
            for f in (out / "checkpoints" / step).rglob("*"):
                if f.is_file():
                    f.write_bytes(b"")
    caplog.clear()
    line = _one_line_error(_tiny("--out", str(out), "--steps", "30", "--resume"))
    assert "no intact checkpoint" in line
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == []  # a terminal would have shown these lines before ours


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--set", "model.d_model=32"], "model.d_model: 16 -> 32"),
        (["--seed", "3"], "seed: 0 -> 3"),
        (["--set", "optim.lr=0.01"], "optim.lr: 0.003 -> 0.01"),
        (["--steps", "10"], "train.steps may only grow"),
        (["--steps", "30", "--set", "optim.schedule=cosine"], "optim.schedule"),
    ],
)
def test_resume_with_another_config_is_refused_and_touches_nothing(tmp_path, change, expected):
    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    line = _one_line_error(_tiny("--out", str(out), "--resume", *change))
    assert expected in line
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_a_cosine_schedule_is_extended_only_when_asked(tmp_path):
    out = tmp_path / "run"
    cosine = ("--set", "optim.schedule=cosine")
    assert _tiny("--out", str(out), *cosine).returncode == 0
    line = _one_line_error(_tiny("--out", str(out), "--resume", "--steps", "30", *cosine))
    assert "--extend-schedule" in line
    proc = _tiny("--out", str(out), "--resume", "--steps", "30", "--extend-schedule", *cosine)
    assert proc.returncode == 0
    assert "resumed from step 20" in proc.stdout


def test_resume_without_the_log_is_refused_and_without_a_checkpoint_starts_clean(tmp_path):
    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0
    (out / "metrics.jsonl").rename(tmp_path / "log")
    line = _one_line_error(_tiny("--out", str(out), "--steps", "30", "--resume"))
    assert "metrics.jsonl is missing" in line
    assert "rerun without --resume" in line

    (tmp_path / "log").rename(out / "metrics.jsonl")
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "eval", "step": 99, "x": Infinity}\n')
    for step_dir in (out / "checkpoints").iterdir():
        step_dir.rename(tmp_path / f"ckpt-{step_dir.name}")
    proc = _tiny("--out", str(out), "--resume")
    assert proc.returncode == 0
    assert "no checkpoint" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 20
    assert "Infinity" not in (out / "metrics.jsonl").read_text()
    json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)  # standard JSON


# ---------------------------------------------------------------------------------------------
# 3. Bad input: one line, exit 2, nothing written (property-based, in-process)

FIELDS = {path: kind for path, kind, _ in cli.field_paths(tiny_experiment.TinyConfig)}
INT_FIELDS = sorted(p for p, k in FIELDS.items() if k == "int")
FLOAT_FIELDS = sorted(p for p, k in FIELDS.items() if k == "float")
POSITIVE_INT_FIELDS = [
    "model.d_model",
    "model.n_layers",
    "model.n_heads",
    "model.d_mlp",
    "data.batch_size",
    "train.eval_every",
    "train.checkpoint_every",
    "train.microbatches",
]
not_an_int = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=8).filter(lambda s: not _parses(int, s)),
    st.sampled_from(["1.5", "1e3", "[1]", "0x10", "", "true"]),
)


def _parses(kind, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


invalid_override = st.one_of(
    # unknown fields
    st.from_regex(r"[a-z]{1,8}(\.[a-z_]{1,8})?", fullmatch=True)
    .filter(
        lambda p: p not in FIELDS and p.split(".")[0] not in {"model", "data", "optim", "train"}
    )
    .map(lambda p: (p, f"{p}=1")),
    # values that do not parse as the field's type
    st.tuples(st.sampled_from(INT_FIELDS), not_an_int).map(lambda t: (t[0], f"{t[0]}={t[1]}")),
    # non-finite floats
    st.tuples(st.sampled_from(FLOAT_FIELDS), st.sampled_from(["inf", "-inf", "nan", "1e999"])).map(
        lambda t: (t[0], f"{t[0]}={t[1]}")
    ),
    # out of range
    st.tuples(st.sampled_from(POSITIVE_INT_FIELDS), st.integers(-(2**70), 0)).map(
        lambda t: (t[0], f"{t[0]}={t[1]}")
    ),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31)).map(
        lambda s: ("seed", f"seed={s}")
    ),
    st.sampled_from(
        [
            ("model.layers_without_attention", "model.layers_without_attention=[[0]]"),
            ("model.layers_without_attention", "model.layers_without_attention=5"),
            ("model.positions", "model.positions=absolute"),
            ("data.n_triggers", "data.n_triggers=12"),
            ("model", "model=3"),
        ]
    ),
)


def _main_in(folder: Path, argv: list[str], capsys) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        try:
            code = cli.main(tiny_experiment.EXPERIMENT, argv)
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bad=invalid_override, good=st.lists(st.sampled_from(["train.steps=5", "seed=1"]), max_size=2)
)
def test_invalid_overrides_are_one_line_naming_the_field_and_write_nothing(capsys, bad, good):
    field, override = bad
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "outer" / "cwd"
        folder.mkdir(parents=True)
        argv = ["--out", "run"]
        good = [g for g in good if not g.startswith(f"{field}=")]  # the last value would win
        for item in [*good, override][:: 1 if len(override) % 2 else -1]:  # either order
            argv += ["--set", item]
        code, err = _main_in(folder, argv, capsys)
        assert code == 2
        assert len(err.strip().splitlines()) == 1
        assert err.startswith("error: ")
        assert field in err
        assert list(folder.iterdir()) == []


bad_cli_args = st.one_of(
    st.integers(min_value=2**31).map(lambda s: (["--seed", str(s)], "seed")),
    st.integers(max_value=-1).map(lambda s: (["--seed", str(s)], "seed")),
    st.integers(max_value=-1).map(lambda n: (["--steps", str(n)], "train.steps")),
    not_an_int.map(lambda s: (["--steps", s], "--steps")),
    st.sampled_from(
        [
            (["--out", ""], "--out"),
            (["--out", "."], "--out"),
            (["--out", ".."], "--out"),
            (["--out", "a_file"], "a_file"),
            (["--out", "a_file/run"], "a_file"),
            (["--preset", "papr"], "papr"),
            (["--extend-schedule"], "--extend-schedule"),
            (["--frobnicate"], "--frobnicate"),
        ]
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=bad_cli_args)
def test_invalid_cli_arguments_are_one_line_and_write_nothing(capsys, bad):
    argv, named = bad
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "outer" / "cwd"  # `--out ..` stays inside the scratch folder
        folder.mkdir(parents=True)
        (folder / "a_file").write_text("x")
        if "--out" not in argv:
            argv = [*argv, "--out", "run"]
        code, err = _main_in(folder, argv, capsys)
        assert code == 2
        assert len(err.strip().splitlines()) == 1, err
        assert named in err
        assert sorted(p.name for p in folder.iterdir()) == ["a_file"]
        assert (folder / "a_file").read_text() == "x"


def test_a_bug_in_a_module_shows_its_traceback(tmp_path):
    def broken(cfg, ctx):
        raise FileNotFoundError("a bug, not bad input")

    exp = cli.Experiment("broken", "", tiny_experiment.PRESETS, broken)
    with pytest.raises(FileNotFoundError):
        cli.main(exp, ["--out", str(tmp_path / "run")])


def test_a_bad_input_found_during_the_run_leaves_no_folder_behind(tmp_path):
    from sinks_jax.errors import DataError

    def needs_data(cfg, ctx):
        raise DataError("corpus missing")

    exp = cli.Experiment("needs_data", "", tiny_experiment.PRESETS, needs_data)
    assert cli.main(exp, ["--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_a_stale_lock_in_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / run_dir.LOCK).write_text(json.dumps({"pid": dead.pid, "host": "h"}))
    with run_dir.RunLock(tmp_path).acquire():
        assert run_dir.held_by_this_process(tmp_path / "runs" / "a")
    assert f"pid {dead.pid}" in capsys.readouterr().out
    with pytest.raises(OutputError, match="current folder"):
        run_dir.check_out_dir(Path.cwd())


def test_a_bad_input_found_during_a_fresh_run_puts_the_previous_run_back(tmp_path):
    from sinks_jax.errors import DataError

    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0
    before = _tree(out)

    def needs_data(cfg, ctx):
        (ctx.out_dir / "runs" / "first").mkdir(parents=True)  # folders, but no results yet
        raise DataError("corpus missing")

    exp = cli.Experiment("tiny", "", tiny_experiment.PRESETS, needs_data)
    assert cli.main(exp, ["--out", str(out)]) == 2
    assert _tree(out) == before
    assert not (out / "archive").exists()


def _tiny_train(out: Path, resume=False, **kw):
    return tiny_experiment.train_tiny(tiny_experiment.PRESETS["quick"], out, resume, **kw)


def test_a_bad_input_found_after_training_keeps_the_trained_runs(tmp_path, capsys):
    from sinks_jax.errors import ConfigError

    def second_run_is_bad(cfg, ctx):
        _tiny_train(ctx.out_dir / "runs" / "first")
        raise ConfigError("invalid config value model.n_layers=0 of the second run")

    exp = cli.Experiment("tiny", "", tiny_experiment.PRESETS, second_run_is_bad)
    out = tmp_path / "run"
    assert cli.main(exp, ["--out", str(out)]) == 2
    assert (out / "runs" / "first" / "checkpoints" / "20").is_dir()
    assert run_dir.read_mark(out)["status"].startswith("failed: invalid config value")
    assert "partial run" in capsys.readouterr().out


def test_a_refused_resume_sets_nothing_aside(tmp_path):
    from sinks_jax.errors import DataError

    out = tmp_path / "run"
    _tiny_train(out)
    _truncate_arrays(out / "checkpoints" / "20")
    (out / "metrics.jsonl").unlink()
    with pytest.raises(DataError, match=r"metrics\.jsonl is missing"):
        _tiny_train(out, resume=True)
    assert (out / "checkpoints" / "20").is_dir()
    assert not (out / "checkpoints.damaged").exists()


def test_resume_on_other_data_is_refused(tmp_path):
    from sinks_jax.errors import ConfigError

    out = tmp_path / "run"
    _tiny_train(out, data_fingerprint="corpus-a")
    with pytest.raises(ConfigError, match="training data changed"):
        _tiny_train(out, resume=True, data_fingerprint="corpus-b")
    assert _tiny_train(out, resume=True, data_fingerprint="corpus-a").resumed_from == 20


def test_result_files_get_the_usual_permissions(tmp_path):
    run_dir.atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_derived_run_configs_are_checked_before_any_training():
    from experiments import residual_peak
    from sinks_jax.config import apply_overrides
    from sinks_jax.errors import ConfigError

    cfg = apply_overrides(residual_peak.PRESETS["quick"], ["model.layers_without_attention=2"])
    with pytest.raises(ConfigError, match="layers_without_attention"):
        residual_peak.run_configs(cfg)  # the 1-layer run has no layer 2


@pytest.mark.parametrize("out", ["x" * 300, "loop/run"])
def test_unusable_out_paths_are_one_line(tmp_path, out, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, err = _main_in(tmp_path, ["--out", out], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--out" in err


# ---------------------------------------------------------------------------------------------
# 4. The mark says how a run ended


def _start_waiting_run(out: Path, go: Path) -> subprocess.Popen:
    """`tests.tiny_experiment` in a subprocess, holding its lock until `go` exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.tiny_experiment", "--out", str(out), "--set",
         f"wait_for={go}"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180  # a loaded machine starts Python + JAX slowly
    while not run_dir.is_run_dir(out):  # the mark is written: the run has started
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.05)
    return proc


def test_sigterm_ends_a_run_with_143_and_the_mark_says_terminated(tmp_path):
    out = tmp_path / "run"
    proc = _start_waiting_run(out, tmp_path / "go")
    try:
        assert run_dir.in_use(out)
        proc.send_signal(signal.SIGTERM)  # what `timeout` sends
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert "terminated by signal 15" in err
    assert run_dir.read_mark(out)["status"] == "terminated (signal 15)"
    assert not run_dir.in_use(out)


def _ending(how: BaseException):
    def run(cfg, ctx):
        tiny_experiment.train_tiny(cfg, ctx.out_dir, ctx.resume)
        raise how

    return cli.Experiment("tiny", "", tiny_experiment.PRESETS, run)


def test_ctrl_c_exits_130_and_the_mark_says_interrupted(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_ending(KeyboardInterrupt()), ["--out", str(out)]) == 130
    mark = run_dir.read_mark(out)
    assert mark["status"] == "interrupted"
    assert mark["config"]["train"]["steps"] == 20
    assert (out / "checkpoints" / "20").is_dir()  # kept for --resume
    assert "rerun with --resume" in capsys.readouterr().err
    # an interrupted resume keeps the saved run's config (what the checkpoints hold)
    assert cli.main(_ending(KeyboardInterrupt()), ["--out", str(out), "--resume", "--steps", "30"])
    mark = run_dir.read_mark(out)
    assert mark["status"] == "interrupted"
    assert mark["config"]["train"]["steps"] == 20
    assert (out / "checkpoints" / "30").is_dir()


def test_a_resume_refused_during_the_run_leaves_the_mark_as_it_was(tmp_path):
    out = tmp_path / "run"
    assert _tiny("--out", str(out)).returncode == 0
    before = (out / run_dir.MARK).read_bytes()
    (out / "metrics.jsonl").unlink()
    _one_line_error(_tiny("--out", str(out), "--steps", "30", "--resume"))
    assert (out / run_dir.MARK).read_bytes() == before  # still the saved, complete run


def test_a_bug_leaves_the_mark_saying_crashed(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        cli.main(_ending(ZeroDivisionError("a bug")), ["--out", str(out)])
    assert run_dir.read_mark(out)["status"] == "crashed: ZeroDivisionError: a bug"
    assert not run_dir.in_use(out)


def test_a_signal_whose_exception_was_swallowed_is_sent_again():
    """An exception raised from a signal handler while a gc callback or __del__ runs is
    printed and dropped (what made the SIGTERM test flaky under load): it is raised again."""
    from sinks_jax.errors import signals_raise

    class Stop(Exception):
        pass

    deadline = time.monotonic() + 30

    def swallow_once_then_wait() -> None:
        with signals_raise(Stop, signal.SIGUSR1, resend_s=0.1):
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(5)
            except Stop:
                pass  # swallowed, as in a gc callback
            while time.monotonic() < deadline:  # the resend raises Stop here
                time.sleep(0.01)

    with pytest.raises(Stop):
        swallow_once_then_wait()
    assert time.monotonic() < deadline
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # handlers restored
