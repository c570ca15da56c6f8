"""`python -m benchmarks.train_step` in model mode: a tiny run writes its JSON (no timing is
checked), and a bad flag is one line with exit status 2."""

import json
import os

import pytest

from benchmarks import train_step

KEYS = {
    "mode",
    "model",
    "precision",
    "batch",
    "parameters",
    "dense_parameters",
    "flop_per_token",
    "train_step_s",
    "tokens_per_s",
    "lower_s",
    "compile_s",
    "achieved_flop_per_s",
    "peak_matmul",
    "mfu",
    "environment",
}


def test_model_mode_writes_its_json(tmp_path, capsys):
    train_step.main(
        [
            *("--d-model", "16", "--n-layers", "1", "--seq-len", "8", "--batch", "4"),
            *("--steps", "1", "--repeats", "1", "--warmup", "1", "--peak-size", "32"),
            *("--out", str(tmp_path)),
        ]
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    assert set(result) >= KEYS
    assert result["batch"] == [4, 8]
    assert result["model"]["d_mlp"] == 64  # 4 · d_model
    assert result["flop_per_token"] == 6 * (4 * 16**2 + 2 * 16 * 64 + 16 * 67) + 12 * 8 * 16
    assert "tokens_per_s" in capsys.readouterr().out


def test_bad_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit:
        train_step.main(["--d-model", "30", "--n-heads", "4", "--preset", "quick"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "two modes" in err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "--xla_cpu_experimental_ynn_fusion_type="),
        ({"XLA_FLAGS": "--a=1"}, "--a=1 --xla_cpu_experimental_ynn_fusion_type="),
        (  # a value the user gave wins
            {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"},
            "--xla_cpu_experimental_ynn_fusion_type=dot",
        ),
        ({"XLA_FLAGS": "--a=1", "SINKS_JAX_XLA_DEFAULTS": "0"}, "--a=1"),  # opted out
    ],
)
def test_cpu_xla_defaults_are_appended_unless_given(monkeypatch, env, expected):
    from sinks_jax import xla_flags

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("SINKS_JAX_XLA_DEFAULTS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    xla_flags.apply_cpu_defaults()
    assert os.environ.get("XLA_FLAGS", "") == expected
