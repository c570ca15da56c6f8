"""Tools and sweeps that lose nothing (issue 26): a sweep's inputs are refused in one line before
anything runs when they cannot give a meaningful table (duplicates, ranks past the model's, a
`--steps` the module does not use), the attention-variant figure reads the softmax baseline by
name, a resumed text search with more steps finishes, and the LM measurements skip the layers
without attention. Modules run in this process at a tiny scale (a dozen steps)."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flax import nnx

from sinks_jax import cli
from sinks_jax.config import apply_overrides
from sinks_jax.errors import ConfigError
from sinks_jax.model import GPT
from sinks_jax.tasks import corpus, lm
from tests.test_lm_experiments import TINY_DATA, _data
from tests.test_lm_experiments import TINY_MODEL as TINY_MODEL_CONFIG

TINY_MODEL = [
    "model.d_model=16",
    "model.d_mlp=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.max_len=32",
]
TINY_TRAIN = [
    "train.steps=12",
    "train.eval_every=6",
    "train.checkpoint_every=12",
    "train.progress=false",
]


def _tiny_data(cache: Path, group: str = "data", **changes: Any) -> list[str]:
    """`--set` overrides for a small synthetic Bigram-Backcopy corpus (as test_lm_experiments)."""
    fields = {**TINY_DATA, "cache_dir": str(cache), **changes}
    return [f"{group}.{k}={v}" for k, v in fields.items()]


def _sets(module: str, cache: Path, steps: bool = True) -> list[str]:
    """`--set` overrides that cut a module's preset to a dozen steps of a tiny model on tiny
    data (without `train.steps` unless `steps`; depth_design: `sweep.steps_per_layer`, its own
    step budget, in place of `train.steps`)."""
    sets = [*TINY_MODEL, *TINY_TRAIN]
    if not steps or module == "depth_design":
        sets = [s for s in sets if not s.startswith("train.steps=")]
    if module == "depth_design":
        sets += _tiny_data(
            cache,
            source="synthetic_khop",
            synthetic_vocab=8,
            n_triggers=1,
            doc_len_min=15,
            doc_len_max=15,
        )
        sets += _tiny_data(cache, group="bb_data")
        sets += [
            "sweep.depths=1,2",
            "sweep.n_seeds=1",
            "sweep.steps_per_layer=6",
            "sweep.mixing_sequences=2",
            "sweep.mixing_length=8",
        ]
    elif module == "packing_sweep":
        sets += _tiny_data(cache, doc_len_min=10, doc_len_max=30)
        sets += [
            "model.max_len=16",
            "sweep.inference_rows=8",
            "sweep.perturb_sequences=4",
            "sweep.long_doc_len_min=17",
            "sweep.long_doc_len_max=20",
        ]
    elif module == "lm_phenomenology":
        sets += [*_tiny_data(cache), "model.n_layers=2"]
    else:
        sets += _tiny_data(cache)
    return sets


def _tiny(module: str, cache: Path, steps: bool = True) -> list[str]:
    """The command-line flags of `_sets`."""
    return [x for s in _sets(module, cache, steps) for x in ("--set", s)]


def _main(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """`python -m experiments.<module> ARGV` in this process: exit code, stdout, stderr."""
    exp = importlib.import_module(f"experiments.{module}").EXPERIMENT
    code = cli.main(exp, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str, *named: str) -> str:
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in named:
        assert name in lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 7. attention_variants: the figure's loss panel is relative to the softmax baseline


class _Figures:
    """A RunContext stand-in that keeps the figures it is given."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}

    def save_figure(self, fig, name: str) -> list[str]:
        self.figures[name] = fig
        return [f"{name}.png"]


def test_variants_figure_reads_the_softmax_baseline_by_name():
    from experiments import attention_variants as av
    from sinks_jax import plotting

    def row(variant: str, opt: str, loss: float) -> dict[str, Any]:
        return {
            "variant": variant,
            "optimizer": opt,
            "seed": 0,
            "diverged": None,
            **dict.fromkeys(av.MEASURED, 1.0),
            "val_loss": loss,
        }

    rows = [row("relu", "adamw", 2.0), row("softmax", "adamw", 1.0), row("softmax", "sgd", 1.5)]
    table = av.summarise(rows)
    assert [r["variant"] for r in table] == ["relu", "softmax", "softmax"]  # relu first
    ctx = _Figures()
    with plotting.style():
        av.make_figures(ctx, table, rows, "adamw")
    fig = ctx.figures["variants_table"]
    loss_panel = fig.axes[3]
    widths = [round(p.get_width(), 6) for p in loss_panel.patches]
    assert widths == [100.0, 0.0, 50.0]  # relu +100 %, softmax 0, softmax (sgd) +50 %
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]  # the panels share them
    assert labels == ["relu", "softmax", "softmax (sgd)"]
    plotting.plt.close(fig)


def test_variants_refuse_an_sgd_row_that_would_replace_the_baseline():
    from experiments import attention_variants as av

    with pytest.raises(ConfigError, match=r"sweep\.sgd"):
        apply_overrides(av.PRESETS["quick"], ["optim.name=sgd"])  # sweep.sgd is on in quick
    apply_overrides(av.PRESETS["quick"], ["optim.name=sgd", "sweep.sgd=false"])


# ---------------------------------------------------------------------------------------------
# 8. text_sink_search: a resumed run with more steps finishes


def test_text_search_resumed_with_more_steps_finishes(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*_tiny("text_sink_search", tmp_path / "cache", steps=False)]  # --steps: the budget
    argv += ["--set", "sweep.candidates=bytes"]
    argv += ["--out", str(out)]
    code, _, err = _main("text_sink_search", [*argv, "--steps", "12"], capsys)
    assert code == 0, err
    # 22 steps: half is 11, an eval step of neither the first run nor the part still to train
    code, _, err = _main("text_sink_search", [*argv, "--resume", "--steps", "22"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["train"]["steps"] == 22
    (row,) = metrics["runs"]
    assert row["steps"] == 22
    evals = [
        json.loads(line)
        for line in (out / "runs" / "bytes" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [e for e in evals if e["kind"] == "eval"]
    assert evals[-1]["step"] == 22
    assert row["val loss"] == pytest.approx(evals[-1]["val_loss"])
    # "at half" is read at the eval nearest step 11 (step 10 or 12, both in the first run's
    # schedule), and the report says so
    nearest = {e["step"]: e for e in evals}
    assert row["val loss at half"] in (
        pytest.approx(nearest[10]["val_loss"]),
        pytest.approx(nearest[12]["val_loss"]),
    )
    assert any("11" in note for note in metrics["notes"])
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


# ---------------------------------------------------------------------------------------------
# 10. duplicate sweep entries are refused before anything runs


DUPLICATES = [
    ("depth_design", "sweep.corpora=khop,khop"),
    (
        "packing_sweep",
        "sweep.packings=bos_per_doc_masked,one_doc_per_row,no_bos,no_bos",
    ),
    ("lm_phenomenology", "sweep.split_ranks=1,1"),
]


@pytest.mark.parametrize(("module", "override"), DUPLICATES)
def test_duplicate_sweep_entries_are_one_line_and_write_nothing(tmp_path, capsys, module, override):
    out = tmp_path / "out"
    argv = [*_tiny(module, tmp_path / "cache"), "--set", override, "--out", str(out)]
    code, _, err = _main(module, argv, capsys)
    _one_line_error(code, err, override.split("=")[0])
    assert not out.exists()


def test_two_domain_markers_named_twice_are_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _main("two_domain_heads", ["--set", "markers=content,content", "--out",
                                              str(out)], capsys)  # fmt: skip
    _one_line_error(code, err, "markers")
    assert not out.exists()


def test_context_sweep_refuses_a_resume_that_moves_the_short_budget(tmp_path, capsys):
    """With long_factor > 1 the short budget is read from the long runs' evals; a resume with
    more steps would ask for an eval they never made (a traceback after training, before)."""
    out = tmp_path / "out"
    argv = [*_tiny("context_length_sweep", tmp_path / "cache", steps=False), "--set",
            "sweep.contexts=8,16", "--set", "sweep.n_seeds=1", "--set", "sweep.long_seeds=1",
            "--set", "sweep.long_factor=2", "--set", "sweep.tokens_per_step=64",
            "--out", str(out)]  # fmt: skip
    code, _, err = _main("context_length_sweep", [*argv, "--steps", "12"], capsys)
    assert code == 0, err
    mark = (out / "run.json").read_bytes()
    code, _, err = _main("context_length_sweep", [*argv, "--steps", "22", "--resume"], capsys)
    _one_line_error(code, err, "train.steps 12 -> 22", "long_factor")
    assert (out / "run.json").read_bytes() == mark  # the saved run is still complete


# ---------------------------------------------------------------------------------------------
# 11. models with attention-free layers


def test_sink_summary_skips_layers_without_attention(tmp_path):
    model = dataclasses.replace(TINY_MODEL_CONFIG, n_layers=3, layers_without_attention=(1,))
    cfg = lm.LMConfig(model=model, data=_data(tmp_path))
    store = corpus.build_store(cfg.data)
    batch = corpus.eval_rows(store, cfg.data, 0)
    summary = lm.sink_summary(GPT(cfg.model, rngs=nnx.Rngs(0)), batch)
    scores = summary["first_scores"]
    assert len(scores) == 3  # one row per layer, in layer order
    assert scores[1] == [None, None]
    assert all(np.isfinite(scores[layer]).all() for layer in (0, 2))
    assert summary["sink_rate_by_layer_0.3"][1] is None
    assert len(summary["residual_first_vs_others"]) == 3
    # the overall rates and the largest score are over the 4 heads that have attention
    first = np.asarray(scores, dtype=float)
    assert summary["max_head_score"] == pytest.approx(np.nanmax(first))
    assert summary["sink_rate_0.3"] == pytest.approx(np.mean(first[[0, 2]] > 0.3))
    assert all(v is None or np.isfinite(v) for v in summary["class_scores_max"].values())


def test_lm_sinks_runs_with_an_attention_free_layer(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*_tiny("lm_sinks", tmp_path / "cache"), "--set", "model.n_layers=2"]
    argv += ["--set", "model.layers_without_attention=0", "--out", str(out)]
    code, _, err = _main("lm_sinks", argv, capsys)
    assert code == 0, err[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    layers = metrics["tables"]["Per layer (final)"]
    assert [r["layer"] for r in layers] == [0, 1]
    assert layers[0]["sink_rate_0.3"] is None
    assert layers[0]["max_head_score"] is None
    assert layers[1]["max_head_score"] is not None
    for f in ("sink_rate_over_training.png", "sink_heatmap.png", "attention_maps.png"):
        assert (out / f).exists()
    # a resume (the eval rows read back from metrics.jsonl) measures the same way
    code, _, err = _main("lm_sinks", [*argv, "--resume"], capsys)
    assert code == 0, err[-3000:]
    assert json.loads((out / "metrics.json").read_text())["tables"]["Per layer (final)"] == layers


ATTENTION_FREE_SWEEPS = {
    "attention_variants": ["sweep.variants=softmax,sink_logit", "sweep.n_seeds=1", "sweep.sgd=0"],
    "depth_sweep": [
        "sweep.depths=2,3",
        "sweep.n_seeds=1",
        "sweep.mixing_sequences=2",
        "sweep.mixing_length=8",
    ],
}


@pytest.mark.slow  # ~15 s of compiles; the default run has sink_summary's and lm_sinks' tests
@pytest.mark.parametrize("module", sorted(ATTENTION_FREE_SWEEPS))
def test_sweeps_measure_a_model_with_an_attention_free_layer(tmp_path, capsys, module):
    sets = ["model.n_layers=2", "model.layers_without_attention=0", *ATTENTION_FREE_SWEEPS[module]]
    argv = [*_tiny(module, tmp_path / "cache"), *[x for s in sets for x in ("--set", s)]]
    code, _, err = _main(module, [*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err[-3000:]


@pytest.mark.parametrize("module", ["depth_design", "packing_sweep", "lm_phenomenology"])
def test_per_head_studies_refuse_an_attention_free_layer(tmp_path, capsys, module):
    out = tmp_path / "out"
    argv = [*_tiny(module, tmp_path / "cache"), "--set", "model.n_layers=2"]
    argv += ["--set", "model.layers_without_attention=1", "--out", str(out)]
    if module == "depth_design":  # every depth has a layer 1
        argv += ["--set", "sweep.depths=2,3"]
    code, _, err = _main(module, argv, capsys)
    line = _one_line_error(code, err, "model.layers_without_attention")
    assert "every layer" in line
    assert not out.exists()


def test_an_lm_without_any_attention_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*_tiny("lm_sinks", tmp_path / "cache"), "--set", "model.layers_without_attention=0"]
    code, _, err = _main("lm_sinks", [*argv, "--out", str(out)], capsys)
    _one_line_error(code, err, "model.layers_without_attention")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 14. bounded split ranks; depth_design refuses --steps


def test_split_ranks_beyond_the_head_dimension_are_one_line(tmp_path, capsys):
    from experiments import lm_phenomenology as ph

    out = tmp_path / "out"
    argv = [*_tiny("lm_phenomenology", tmp_path / "cache"), "--set", "sweep.split_ranks=1000000"]
    code, _, err = _main("lm_phenomenology", [*argv, "--out", str(out)], capsys)
    _one_line_error(code, err, "sweep.split_ranks", "head dimension")
    assert not out.exists()
    tiny = _sets("lm_phenomenology", tmp_path / "cache")  # d_head = 16 / 2 = 8
    apply_overrides(ph.PRESETS["quick"], [*tiny, "sweep.split_ranks=1,8"])  # d_head is the top
    with pytest.raises(ConfigError, match=r"sweep\.split_ranks"):
        apply_overrides(ph.PRESETS["quick"], [*tiny, "sweep.split_ranks=9"])


@pytest.mark.parametrize("flag", [["--steps", "5"], ["--set", "train.steps=5"]])
def test_depth_design_refuses_steps(tmp_path, capsys, flag):
    out = tmp_path / "out"
    argv = [*_tiny("depth_design", tmp_path / "cache"), *flag, "--out", str(out)]
    code, _, err = _main("depth_design", argv, capsys)
    _one_line_error(code, err, "sweep.steps_per_layer")
    assert not out.exists()
