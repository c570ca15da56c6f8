"""The shared command line: --help, bad input ends in one clear message, a short real run.

Everything runs `cli.main(EXPERIMENT, argv)` in this process (argparse, config overrides, the run
folder, training, figures), except one real `python -m experiments.bigram_backcopy` whose point
is the process's exit status and stderr."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import bigram_backcopy
from sinks_jax import cli

ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, *args):
    """(exit code, stdout, stderr) of `python -m experiments.bigram_backcopy ARGS`, in process."""
    try:
        code = cli.main(bigram_backcopy.EXPERIMENT, list(args))
    except SystemExit as exit:  # argparse: --help and usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_presets_and_fields(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0
    for text in ("--preset", "quick", "paper", "model.n_layers", "--set", "--resume"):
        assert text in out


def test_unknown_preset_is_one_clear_error(capsys):
    code, _, err = _cli(capsys, "--preset", "huge")
    assert code == 2
    assert "invalid choice: 'huge'" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_config_value_is_one_clear_error(tmp_path, capsys):
    code, _, err = _cli(capsys, "--out", str(tmp_path), "--set", "model.positions=absolute")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "model.positions='absolute'" in err
    assert "allowed" in err
    code, _, err = _cli(capsys, "--out", str(tmp_path), "--set", "model.depth=2")
    assert code == 2
    assert "unknown config field 'model.depth'" in err


def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    """The module's `__main__` wiring: bad input is exit status 2 and one line on stderr."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bigram_backcopy",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "model.positions=absolute",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "model.positions='absolute'" in proc.stderr
    assert not (tmp_path / "o").exists()


# A tiny Bigram-Backcopy model (d 16, T 16): the whole pipeline in a few seconds.
TINY = (
    "--set",
    "model.d_model=16",
    "--set",
    "model.d_mlp=32",
    "--set",
    "model.max_len=16",
    "--set",
    "data.seq_len=16",
    "--set",
    "data.batch_size=16",
    "--set",
    "data.eval_batch_size=32",
    "--set",
    "train.progress=false",
)


def test_nan_loss_is_one_clear_error(tmp_path, capsys):
    code, _, err = _cli(
        capsys,
        "--out",
        str(tmp_path),
        "--steps",
        "30",
        *TINY,
        "--set",
        "optim.name=sgd",
        "--set",
        "optim.lr=1e12",
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "NaN/inf at step" in err


SHORT_RUN = (
    "--steps",
    "20",
    "--set",
    "train.eval_every=10",
    "--set",
    "train.checkpoint_every=10",
    *TINY,
)


def test_short_run_writes_metrics_figures_and_resumes(tmp_path, capsys):
    code, out, err = _cli(capsys, "--out", str(tmp_path), *SHORT_RUN)
    assert code == 0, err[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["train"]["steps"] == 20
    assert metrics["config"]["model"]["d_model"] == 16
    assert {"name", "paper_value", "measured", "threshold", "passed"} <= set(metrics["claims"][0])
    assert "claims passed" in out
    figures = (
        "dynamics",
        "attention_no_trigger",
        "attention_with_trigger",
        "value_norms",
        "interventions",
        "probe",
    )
    for name in figures:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    for name in ("config.json", "metrics.jsonl", "report.md"):
        assert (tmp_path / name).exists()
    # resume continues from the final checkpoint: nothing left to train
    code, out, err = _cli(capsys, "--out", str(tmp_path), *SHORT_RUN, "--resume")
    assert code == 0, err[-2000:]
    assert "resumed from step 20" in out, err[-2000:]


def _tiny_preset(cfg, **data):
    model = dataclasses.replace(cfg.model, d_model=16, d_mlp=32, n_heads=1, max_len=16)
    return dataclasses.replace(cfg, model=model, data=dataclasses.replace(cfg.data, **data))


def test_benchmark_runs_on_tiny_presets(monkeypatch):
    """The benchmark's code path (train step, forward with and without capture, batch sampling,
    micro-batches) on tiny versions of the two presets; the real presets: the slow test below."""
    from benchmarks import train_step

    bb = _tiny_preset(bigram_backcopy.PRESETS["quick"], seq_len=16, batch_size=8)
    lm = _tiny_preset(train_step.EXPERIMENTS["lm_sinks"]["quick"], seq_len=16, batch_size=8)
    monkeypatch.setitem(train_step.EXPERIMENTS, "bigram_backcopy", {"quick": bb})
    monkeypatch.setitem(train_step.EXPERIMENTS, "lm_sinks", {"quick": lm})
    result = train_step.run("bigram_backcopy", "quick", repeats=1)
    assert result["train_step_s"] > 0
    assert result["ratio_capture_all_over_no_capture"] > 0
    assert result["batch"] == [8, 16]
    assert result["sample_batch_s"] > 0
    lm_result = train_step.run("lm_sinks", "quick", repeats=1, microbatches=2)
    assert lm_result["train_step_s"] > 0
    assert lm_result["microbatches"] == 2


@pytest.mark.slow
def test_benchmark_runs():
    from benchmarks.train_step import run

    result = run("bigram_backcopy", "quick", repeats=1)
    assert result["train_step_s"] > 0
    assert result["ratio_capture_all_over_no_capture"] > 0
    lm = run("lm_sinks", "quick", repeats=1, microbatches=2)
    assert lm["train_step_s"] > 0
    assert lm["microbatches"] == 2


def test_report_says_what_was_seen(tmp_path):
    from sinks_jax.claims import check
    from tests import tiny_experiment

    cfg = tiny_experiment.PRESETS["quick"]
    claims = [check("x", 1.0, ">=", 2.0)]
    payload = {"notes": ["x stays at 1.0: the task never needs it."]}
    cli.write_results(tiny_experiment.EXPERIMENT, "quick", cfg, tmp_path, 1.0, claims, payload)
    report = (tmp_path / "report.md").read_text()
    assert "## What was seen\n\n- x stays at 1.0: the task never needs it." in report
    assert json.loads((tmp_path / "metrics.json").read_text())["notes"] == payload["notes"]
