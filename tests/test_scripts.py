"""`scripts/gpu_references.sh` with a stand-in Python: what it refuses, what it writes."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_references.sh"


@pytest.fixture
def fake_python(tmp_path):
    """A stand-in for python3 that records its call and exits with $FAKE_RC."""
    fake = tmp_path / "fake_python"
    fake.write_text(
        '#!/usr/bin/env bash\necho "$@" >> "$CALLS"\nmkdir -p "${@: -1}"\n'
        'echo "{}" > "${@: -1}/metrics.json"\necho "{}" > "${@: -1}/run.json"\n'
        'exit "${FAKE_RC:-0}"\n'
    )
    fake.chmod(0o755)
    return fake


def _run(tmp_path, fake_python, args, **env):
    base = {k: v for k, v in os.environ.items() if k != "OUT"}
    calls = tmp_path / "calls"
    full = {**base, "PYTHON": str(fake_python), "RUNS": str(tmp_path / "runs"),
            "CALLS": str(calls), **env}  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=full, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    return proc, calls


@pytest.mark.parametrize("out", [None, "", "/"])
def test_without_out_it_runs_nothing_and_writes_nothing(tmp_path, fake_python, out):
    scratch = tmp_path / "scratch" / "inner"  # where the old script's writes would land
    scratch.mkdir(parents=True)
    # `name` is what follows the module's last dot: on the old script, with OUT empty, the log
    # went to "$OUT/$name.log" = <scratch>/x.log, not to the filesystem root
    item = f"experiments.a.{scratch}/x:quick" if "." not in str(scratch) else "experiments.x:q"
    env = {} if out is None else {"OUT": out}
    proc, calls = _run(tmp_path, fake_python, [item], **env)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "OUT" in proc.stderr
    assert not calls.exists()  # nothing ran
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "runs").exists()


def test_a_malformed_item_is_refused_before_anything_runs(tmp_path, fake_python):
    proc, calls = _run(
        tmp_path, fake_python, ["experiments.x:quick", "experiments.a/../b:quick"],
        OUT=str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "not MODULE:PRESET" in proc.stderr
    assert not calls.exists()


def test_a_failing_module_does_not_stop_the_next_and_sets_the_exit_status(tmp_path, fake_python):
    out = tmp_path / "out"
    proc, calls = _run(
        tmp_path, fake_python, ["experiments.a:gpu", "experiments.b:gpu"], OUT=str(out),
        FAKE_RC="3",
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert len(calls.read_text().splitlines()) == 2
    assert "rc=3 " in (out / "a.log").read_text()
    # a failed run is not packed: what its folder holds may be an older run's
    assert sorted(p.name for p in out.iterdir()) == ["a.log", "b.log"]


def test_a_completed_run_is_packed_with_its_mark(tmp_path, fake_python):
    import tarfile

    out = tmp_path / "out"
    proc, _ = _run(tmp_path, fake_python, ["experiments.a:gpu"], OUT=str(out))
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out / "a.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["metrics.json", "run.json"]
