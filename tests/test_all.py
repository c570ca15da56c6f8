"""`python -m experiments.all`: every module is listed, has quick and paper presets, and runs."""

import importlib
import pkgutil

import pytest

import experiments
import proofs_numeric
from experiments import all as run_all


def test_every_module_with_an_experiment_is_listed():
    found = set()
    for package in (experiments, proofs_numeric):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            if hasattr(module, "EXPERIMENT"):
                found.add(module.__name__)
    assert found == set(run_all.MODULES)
    for m in run_all.MODULES:
        assert {"quick", "paper"} <= set(run_all.presets_of(m)), m


def test_unknown_module_is_a_clear_error():
    with pytest.raises(run_all.UsageError, match="unknown module"):
        run_all.select("nope")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "papr"], "no selected module has a preset 'papr'"),
        (["--only", "adam_vs_sgd_peak", "--preset", "text"], "no selected module has a preset"),
        (["--out", "/proc/no_such_place/all"], "cannot create"),
        (["--only", ","], "names no module"),
        (["--only", ""], "names no module"),
        (["--only", "nope"], "unknown module"),
        (["--out", "."], "current folder"),
        (["--jobs", "0"], "--jobs 0"),
    ],
)
def test_bad_arguments_exit_2_having_run_nothing(tmp_path, monkeypatch, capsys, argv, message):
    ran = []
    monkeypatch.setattr(run_all, "run_module", lambda m, preset, out, jobs=1: ran.append(m) or "ok")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert run_all.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert ran == []
    assert list(tmp_path.rglob("*")) == [cwd]


def test_runs_the_selected_modules_and_summarises_their_claims(tmp_path, monkeypatch):
    code = run_all.main(["--only", "adam_vs_sgd_peak", "--out", str(tmp_path)])
    summary = (tmp_path / "summary.md").read_text()
    assert code == 0
    assert "| adam_vs_sgd_peak | ok |" in summary
    assert (tmp_path / "adam_vs_sgd_peak" / "metrics.json").exists()
    monkeypatch.setattr(run_all, "run_module", lambda m, preset, out, jobs=1: "ok")
    argv = ["--only", "adam_vs_sgd_peak,lm_sinks", "--preset", "text", "--out", str(tmp_path)]
    assert run_all.main(argv) == 0
    assert "| adam_vs_sgd_peak | no 'text' preset |" in (tmp_path / "summary.md").read_text()


def test_a_module_that_does_not_import_is_reported_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "MODULES", ("proofs_numeric.no_such_module", *run_all.MODULES))
    monkeypatch.setattr(run_all, "run_module", lambda m, preset, out, jobs=1: "ok")
    code = run_all.main(["--only", "no_such_module,adam_vs_sgd_peak", "--out", str(tmp_path)])
    summary = (tmp_path / "summary.md").read_text()
    assert code == 1
    assert "| no_such_module | import failed: ModuleNotFoundError" in summary
    assert "| adam_vs_sgd_peak | ok |" in summary


def test_jobs_run_modules_side_by_side_each_with_a_share_of_gpu_memory(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        run_all, "run_module", lambda m, preset, out, jobs=1: seen.append((m, jobs)) or "ok"
    )
    argv = [
        "--only",
        "adam_vs_sgd_peak,mutual_reinforcement",
        "--jobs",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert run_all.main(argv) == 0
    assert sorted(seen) == [
        ("proofs_numeric.adam_vs_sgd_peak", 2),
        ("proofs_numeric.mutual_reinforcement", 2),
    ]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.index("adam_vs_sgd_peak") < summary.index("mutual_reinforcement")  # in order
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    env = run_all._env_for_jobs(3)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.3)


def test_only_naming_a_module_twice_is_refused(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(run_all, "run_module", lambda m, preset, out, jobs=1: ran.append(m) or "ok")
    argv = ["--only", "adam_vs_sgd_peak,adam_vs_sgd_peak", "--jobs", "2", "--out", str(tmp_path)]
    assert run_all.main(argv) == 2
    err = capsys.readouterr().err
    assert "adam_vs_sgd_peak more than once" in err
    assert len(err.strip().splitlines()) == 1
    assert ran == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_scheduling_and_writes_what_finished(tmp_path, monkeypatch, jobs):
    """Ctrl-C while the second of three modules runs: the third never starts, the summary and
    report.html show the first as ok and the second as interrupted, exit 130."""
    import os
    import signal
    import time

    from tests.test_results_tables import CLAIMS_B, write_run

    ran = []

    def fake_run(module, preset, out_root, jobs=1):
        name = run_all.short_name(module)
        ran.append(name)
        if name != "mutual_reinforcement":
            write_run(out_root / name, name, CLAIMS_B)
            return "ok"
        os.kill(os.getpid(), signal.SIGINT)  # the main thread gets KeyboardInterrupt
        deadline = time.monotonic() + 30
        while not run_all.CHILDREN.closed:  # ... and ends the module processes
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return run_all.module_status(130)  # what a module process answers to SIGINT

    monkeypatch.setattr(run_all, "run_module", fake_run)
    only = "adam_vs_sgd_peak,mutual_reinforcement,ctr_construction"
    assert run_all.main(["--only", only, "--jobs", jobs, "--out", str(tmp_path)]) == 130
    if jobs == "1":  # with two, the third may start while the second runs
        assert ran == ["adam_vs_sgd_peak", "mutual_reinforcement"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| adam_vs_sgd_peak | ok | 1/1 |" in summary
    assert "| mutual_reinforcement | interrupted |" in summary
    third = "ok | 1/1" if "ctr_construction" in ran else "not run (interrupted)"
    assert f"| ctr_construction | {third} |" in summary
    assert (
        f"{len(ran) - 1} passed / {len(ran) - 1} claims" in (tmp_path / "report.html").read_text()
    )
