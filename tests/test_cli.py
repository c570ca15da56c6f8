"""The shared command line: --help, bad input ends in one clear message, a short real run."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "experiments.bigram_backcopy", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def test_help_lists_presets_and_fields():
    proc = _cli("--help")
    assert proc.returncode == 0
    for text in ("--preset", "quick", "paper", "model.n_layers", "--set", "--resume"):
        assert text in proc.stdout


def test_unknown_preset_is_one_clear_error():
    proc = _cli("--preset", "huge")
    assert proc.returncode == 2 and "invalid choice: 'huge'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_value_is_one_clear_error(tmp_path):
    proc = _cli("--out", str(tmp_path), "--set", "model.positions=absolute")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.positions='absolute'" in proc.stderr and "allowed" in proc.stderr
    proc = _cli("--out", str(tmp_path), "--set", "model.depth=2")
    assert proc.returncode == 2 and "unknown config field 'model.depth'" in proc.stderr


def test_nan_loss_is_one_clear_error(tmp_path):
    proc = _cli(
        "--out",
        str(tmp_path),
        "--steps",
        "30",
        "--set",
        "optim.name=sgd",
        "--set",
        "optim.lr=1e12",
        "--set",
        "train.progress=false",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "NaN/inf at step" in proc.stderr


SHORT_RUN = (
    "--steps",
    "60",
    "--set",
    "train.eval_every=30",
    "--set",
    "data.eval_batch_size=32",
    "--set",
    "train.progress=false",
)


def test_short_run_writes_metrics_figures_and_resumes(tmp_path):
    proc = _cli("--out", str(tmp_path), *SHORT_RUN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["train"]["steps"] == 60
    assert {"name", "paper_value", "measured", "threshold", "passed"} <= set(metrics["claims"][0])
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
    proc = _cli("--out", str(tmp_path), *SHORT_RUN, "--resume")
    assert proc.returncode == 0 and "resumed from step 60" in proc.stdout


def test_benchmark_runs():
    from benchmarks.train_step import run

    result = run("bigram_backcopy", "quick", repeats=1)
    assert result["train_step_s"] > 0 and result["ratio_capture_all_over_no_capture"] > 0
    lm = run("lm_sinks", "quick", repeats=1, microbatches=2)
    assert lm["train_step_s"] > 0 and lm["microbatches"] == 2


def test_report_says_what_was_seen(tmp_path):
    from sinks_jax import cli
    from sinks_jax.claims import check
    from tests import tiny_experiment

    cfg = tiny_experiment.PRESETS["quick"]
    claims = [check("x", 1.0, ">=", 2.0)]
    payload = {"notes": ["x stays at 1.0: the task never needs it."]}
    cli.write_results(tiny_experiment.EXPERIMENT, "quick", cfg, tmp_path, 1.0, claims, payload)
    report = (tmp_path / "report.md").read_text()
    assert "## What was seen\n\n- x stays at 1.0: the task never needs it." in report
    assert json.loads((tmp_path / "metrics.json").read_text())["notes"] == payload["notes"]
