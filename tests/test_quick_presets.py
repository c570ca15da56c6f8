"""The science at the quick presets, end to end (`pytest -m slow`, a few minutes in all): a
module's whole `--preset quick` run through its command line, and every claim it makes must pass.

The default run checks the same code paths at tiny sizes (tests/test_cli.py runs
`experiments.bigram_backcopy` end to end on a d 16 model; tests/test_theory_active_dormant.py
runs the mutual-reinforcement dynamics for a short while)."""

import json

import pytest

from sinks_jax import cli

pytestmark = pytest.mark.slow


def _quick_run(module, out, capsys) -> list[dict]:
    code = cli.main(module.EXPERIMENT, ["--preset", "quick", "--out", str(out)])
    printed, errors = capsys.readouterr()
    assert code == 0, errors[-3000:]
    claims = json.loads((out / "metrics.json").read_text())["claims"]
    failed = [(c["name"], c["measured"], c["threshold"]) for c in claims if c["passed"] is not True]
    assert not failed, printed[-3000:]
    return claims


def test_bigram_backcopy_quick_preset_passes_every_claim(tmp_path, capsys):
    """1000 steps, d 64 (about a minute on a CPU): 15 of 15 claims pass on seeds 0-4."""
    from experiments import bigram_backcopy

    claims = _quick_run(bigram_backcopy, tmp_path / "bb", capsys)
    assert len(claims) >= 15
    names = {c["name"] for c in claims}
    assert "attn_sink_non_trigger" in names


def test_mutual_reinforcement_quick_preset_passes_every_claim(tmp_path, capsys):
    """The reduced model's gradient flow, 2·10^5 steps (about 15 s): 8 of 8 claims pass."""
    from proofs_numeric import mutual_reinforcement

    claims = _quick_run(mutual_reinforcement, tmp_path / "mr", capsys)
    assert len(claims) >= 8
