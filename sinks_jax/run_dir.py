"""Run folders that lose nothing: a mark, an exclusive lock, archiving and atomic writes.

A run folder carries `run.json` (the module, preset and resolved config: the *mark*). A fresh run
may archive only a marked folder (its entries move to `archive/<time>/`); it refuses a non-empty
folder without the mark, and never runs in the current working directory or a parent of it. A
run holds `run.lock` (an `fcntl.flock` on a file naming its pid and host) for its whole length:
the kernel drops the lock when the process dies, so a lock left by a dead run is taken over (with
a message) while a live run's lock refuses a second run. Every result file is written atomically
(temp file in the same folder, flush, fsync, rename), and JSON is standard (NaN/inf become null).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from sinks_jax.errors import (
    ConfigError,
    OutputError,
    SinksJaxError,
    Terminated,
    TrainingDivergedError,
)

MARK = "run.json"
LOCK = "run.lock"
ARCHIVE = "archive"
_KEEP_IN_PLACE = {ARCHIVE, LOCK}  # never archived


# ---------------------------------------------------------------------------------------------
# Atomic writes


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` so that it holds its old content or all of the new one, never a part:
    `write(f)` fills a temp file in the same folder, which is flushed, fsynced and renamed over
    `path` (for `savefig`, `np.save`, text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; results are shared like any new file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
FOLDER_MODE = 0o777 & ~_umask()  # what a new folder gets (for one made 0700 by mkdtemp)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every file system opens folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def json_text(payload: Any, indent: int | None = 2) -> str:
    """Standard JSON (numpy/jax values made plain, NaN/inf as null; never `NaN`/`Infinity`)."""
    from sinks_jax.claims import to_jsonable  # local: claims imports nothing of ours

    return json.dumps(to_jsonable(payload), indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json_text(payload) + "\n")


# ---------------------------------------------------------------------------------------------
# Where a run may write


def check_out_dir(out_dir: str | Path) -> Path:
    """The output folder, or OutputError (one line) when it cannot hold a run: the current
    working directory or a parent of it, an existing file, or a path under a file."""
    text = str(out_dir)
    if not text.strip():
        raise OutputError("--out is empty; name a new or empty folder (or a previous run folder)")
    try:
        path = Path(out_dir).expanduser()
        resolved = path.resolve()
        cwd = Path.cwd().resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise OutputError(
                f"--out {text} is the current folder or a parent of it; a run needs a folder of "
                "its own (e.g. results/<name>)"
            )
        for parent in [resolved, *resolved.parents]:
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == resolved else f"is under a file ({parent})"
                raise OutputError(f"--out {text} {where}; name a folder")
    except (OSError, RuntimeError) as err:  # a name too long, a symlink loop, ~nouser
        reason = getattr(err, "strerror", None) or err
        raise OutputError(f"--out {text} cannot be used: {reason}") from None
    return path


def is_run_dir(path: Path) -> bool:
    """True if `path` carries the mark of a sinks_jax run."""
    try:
        mark = read_mark(path)
    except (OSError, ValueError):
        return False
    return isinstance(mark, dict) and "sinks_jax_run" in mark


def read_mark(path: Path) -> dict[str, Any]:
    return json.loads((path / MARK).read_text(encoding="utf-8"))


def _entries(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name not in _KEEP_IN_PLACE)


def archive_previous(path: Path) -> Path | None:
    """Move a previous run's entries into `archive/<time>/` (only a marked run folder; anything
    else non-empty is refused). Returns the archive folder, or None if there was nothing."""
    entries = _entries(path)
    if not entries:
        return None
    if not is_run_dir(path):
        names = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        older = (
            " (results of a sinks_jax older than run folders? move them away yourself)"
            if (path / "config.json").exists() or (path / "metrics.json").exists()
            else ""
        )
        raise OutputError(
            f"{path} is not empty ({names}) and is not a sinks_jax run folder (no {MARK}){older}; "
            "choose a new or empty folder with --out"
        )
    entries.sort(key=lambda p: p.name == MARK)  # the mark last: a kill midway keeps it in place
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path / ARCHIVE / stamp
    n = 1
    while dest.exists():
        n += 1
        dest = path / ARCHIVE / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for p in entries:
        os.replace(p, dest / p.name)
    return dest


def write_mark(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write_json(path / MARK, {"sinks_jax_run": 1, **payload})


# ---------------------------------------------------------------------------------------------
# The lock

_HELD: dict[Path, RunLock] = {}  # folders locked by this process


class RunLock:
    """Exclusive lock on a run folder for the whole run (`run.lock`: pid, host, start time)."""

    def __init__(self, folder: Path):
        self.folder = folder.resolve()
        self.path = self.folder / LOCK
        self._fd: int | None = None

    def acquire(self, say: Callable[[str], None] = print) -> RunLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise OutputError(f"cannot write in {self.folder}: {err.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                for _ in range(20):  # the holder may be between truncating and writing it
                    if owner:
                        break
                    time.sleep(0.05)
                    owner = _read_owner(fd)
                os.close(fd)
                raise OutputError(
                    f"{self.folder} is in use by another run (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}, since {owner.get('started', '?')}); wait for it "
                    "or choose another --out"
                ) from None
            # The holder before us may have unlinked the file after we opened it: retry then.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_owner(fd)
        if stale.get("pid") not in (None, os.getpid()):
            say(
                f"[sinks_jax] taking over the lock of a run that is no longer running "
                f"(pid {stale['pid']} on {stale.get('host', '?')}, since "
                f"{stale.get('started', '?')})"
            )
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD[self.folder] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self.folder, None)
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def in_use(folder: Path) -> bool:
    """True while a live run holds `folder`'s lock (probed with a shared, non-blocking flock on
    an existing run.lock: nothing is created or written)."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:
        return False  # no lock file: no run has it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our shared lock
    return False


def held_by_this_process(folder: Path) -> bool:
    """True if this process holds the lock of `folder` or of a folder above it."""
    resolved = folder.resolve()
    return any(p in _HELD for p in [resolved, *resolved.parents])


@contextlib.contextmanager
def open_run(
    folder: str | Path,
    *,
    resume: bool,
    mark: Mapping[str, Any],
    check_previous: Callable[[dict[str, Any]], None] | None = None,
    say: Callable[[str], None] = print,
) -> Iterator[Path]:
    """Create and lock `folder` for one run, then yield it.

    Fresh: a previous run is archived first (a non-empty folder without the mark is refused).
    Resume: `check_previous(mark)` vets the saved run before anything is written (a folder
    without the mark is refused unless empty: then the run starts fresh, with a message); the
    caller rewrites the mark when the resumed run is done. Inside a folder this process already
    holds, the holder has done all this and `open_run` only creates the folder.

    An input error (`SinksJaxError` other than a diverged loss) raised by a fresh run before it
    wrote anything but its mark undoes it (the mark removed, an archived previous run moved back,
    a folder the call created removed), so a bad input leaves no half-written folder. Any other
    end but success (a later error, Ctrl-C, SIGTERM, a bug's exception) keeps what the run wrote
    and the mark says how it ended (`status`: failed / interrupted / terminated / crashed, see
    `ended_status`). A resume refused for its input (by `check_previous` or later, e.g. a log
    that does not reach the checkpoint) leaves the mark as it was: it still describes the
    saved run's results, which a refused resume does not replace.
    """
    path = check_out_dir(folder)
    if held_by_this_process(path):
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder {folder}: {err.strerror}") from None
    lock, fresh, moved, undone, started = None, False, None, False, False
    try:
        lock = RunLock(path).acquire(say)
        if resume and is_run_dir(path):
            if check_previous is not None:
                check_previous(read_mark(path))
            started = True
            # The mark keeps the saved run's config until the resumed run rewrites it at its
            # end: a resume that stops early is checked against what the checkpoints hold.
        elif resume and _entries(path):
            raise OutputError(
                f"cannot resume in {path}: it is not a sinks_jax run folder (no {MARK})"
            )
        else:
            if resume:
                say(f"[sinks_jax] --resume: no previous run in {path}; starting fresh")
            moved = archive_previous(path)
            fresh = started = True  # from here an interrupted run is marked as such
            if moved is not None:
                say(f"[sinks_jax] the previous run in {path} was moved to {moved}")
            write_mark(path, mark)
        yield path
    except BaseException as err:
        input_error = isinstance(err, SinksJaxError) and not isinstance(err, TrainingDivergedError)
        if fresh and input_error and _wrote_only_the_mark(path):
            _undo_fresh_run(path, moved)  # still under our lock
            undone = True
        elif started and not isinstance(err, GeneratorExit) and (fresh or not input_error):
            _mark_ended(path, mark if fresh else None, ended_status(err))
            if fresh:
                say(f"[sinks_jax] the partial run in {path} is kept")
        raise
    finally:
        if lock is not None:
            lock.release()
        if undone and created:
            with contextlib.suppress(OSError):  # only while empty
                path.rmdir()


def ended_status(err: BaseException) -> str:
    """run.json's `status` for a run that ended by `err` instead of completing."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    if isinstance(err, Terminated):
        return f"terminated (signal {err.signum})"
    if isinstance(err, SinksJaxError):
        return f"failed: {err}"
    return f"crashed: {type(err).__name__}: {err}"


def _mark_ended(path: Path, mark: Mapping[str, Any] | None, status: str) -> None:
    """Say in the mark how the run ended: `mark` (a fresh run's) or the saved one (a resume,
    whose config the checkpoints still hold) with `status` and the time. Best effort: a mark
    that cannot be written must not hide the error that ended the run."""
    with contextlib.suppress(OSError, ValueError):
        base = dict(mark) if mark is not None else read_mark(path)
        ended = time.strftime("%Y-%m-%d %H:%M:%S")
        write_mark(path, {**base, "status": status, "ended": ended})


def _wrote_only_the_mark(path: Path) -> bool:
    return all(p.is_dir() or p == path / MARK for e in _entries(path) for p in [e, *e.rglob("*")])


def _undo_fresh_run(path: Path, moved: Path | None) -> None:
    """Remove the mark (and empty folders) of a fresh run that wrote nothing else, and move the
    archived previous run back."""
    for p in _entries(path):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if moved is not None:
        for p in moved.iterdir():
            os.replace(p, path / p.name)
        moved.rmdir()
        with contextlib.suppress(OSError):  # only if empty: earlier archives stay
            (path / ARCHIVE).rmdir()


# ---------------------------------------------------------------------------------------------
# Resume: the saved config against the requested one

# Fields that may differ on resume: the number of steps (it may only grow) and those that do not
# change what is computed (the progress bar, how often checkpoints are saved and how many kept).
RESUMABLE_FIELDS = (
    "train.steps",
    "train.progress",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    # placement only: a checkpoint restores onto any device count, sharded or replicated (the
    # numbers then differ from an uninterrupted run by reduction order only)
    "train.devices",
    "train.fsdp",
)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_differences(
    saved: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    ignore: tuple[str, ...] = (),
) -> list[str]:
    """'path: saved -> requested' for every leaf (dotted path) that differs, except `ignore`.
    `defaults` (flat path -> value, `config.leaf_defaults`) stand in for the fields `saved` lacks
    (added to the code after it was written: their absence means the default's behaviour)."""
    new = flatten(requested)
    old = {k: v for k, v in (defaults or {}).items() if k in new} | flatten(saved)
    return [
        f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
        for k in sorted(set(old) | set(new))
        if k not in ignore and old.get(k, "<absent>") != new.get(k, "<absent>")
    ]


def check_resume_config(
    saved: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    where: Path,
    extend_schedule: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """ConfigError (one line, naming every differing field) unless `requested` continues
    `saved`: only `train.steps` may grow, and under a cosine schedule only with
    `extend_schedule` (its horizon is part of the config: extending it is a new schedule).
    `defaults`: see `config_differences`."""
    differ = config_differences(saved, requested, defaults=defaults, ignore=RESUMABLE_FIELDS)
    if differ:
        raise ConfigError(
            f"cannot resume {where}: the config differs from the saved run ({'; '.join(differ)}); "
            "resume with the same settings, or start a fresh run without --resume"
        )
    old, new = flatten(saved), flatten(requested)
    if "train.steps" not in old or old["train.steps"] == new.get("train.steps"):
        return
    before, after = old["train.steps"], new["train.steps"]
    if after < before:
        raise ConfigError(
            f"cannot resume {where}: train.steps={after} is smaller than the saved run's "
            f"{before}; train.steps may only grow on resume"
        )
    cosine = [k for k, v in new.items() if k.endswith("schedule") and v == "cosine"]
    if cosine and not extend_schedule:
        raise ConfigError(
            f"cannot resume {where} with train.steps {before} -> {after}: {cosine[0]}='cosine' "
            f"decays over the saved {before} steps and a longer run would re-stretch it; pass "
            "--extend-schedule to continue on a new, longer schedule"
        )


@dataclasses.dataclass(frozen=True)
class Resume:
    """`--resume` (truthy): continue each run from its newest intact checkpoint.
    `extend_schedule` (`--extend-schedule`) lets `train.steps` grow under a cosine schedule."""

    extend_schedule: bool = False

    def __bool__(self) -> bool:
        return True


def extends_schedule(resume: bool | Resume) -> bool:
    return isinstance(resume, Resume) and resume.extend_schedule
