"""Read a finished run folder back: `load_run(out_dir)` gives its config, claims, metrics and the
logged time series of it and of every sub-run (`runs/<name>/`), without touching the folder.

    run = load_run("results/bigram_backcopy/quick")
    [c["name"] for c in run.claims if not c["passed"]]
    [r["loss"] for r in run.history if r["kind"] == "train"]
    run.sub_runs["AdamW"].evals()            # multi-run modules (optimizer_mitigations, sweeps)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sinks_jax.errors import DataError
from sinks_jax.train import read_log


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    path: Path
    config: dict[str, Any]  # config.json (a module's: the `config` field of metrics.json)
    metrics: dict[str, Any]  # metrics.json ({} for a sub-run)
    history: list[dict[str, Any]]  # metrics.jsonl rows, train and eval ([] when not logged)
    sub_runs: dict[str, FinishedRun]  # runs/<name>/, by folder name

    @property
    def claims(self) -> list[dict[str, Any]]:
        return self.metrics.get("claims", [])

    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r.get("kind") == "eval"]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def load_run(out_dir: str | Path) -> FinishedRun:
    """The run in `out_dir` (a module's run folder, or one of its `runs/<name>/`); DataError if
    it holds neither a metrics.json nor a config.json."""
    path = Path(out_dir)
    metrics_file, config_file, log = (
        path / "metrics.json",
        path / "config.json",
        path / "metrics.jsonl",
    )
    if not metrics_file.exists() and not config_file.exists():
        raise DataError(f"{path} is not a run folder (no metrics.json or config.json)")
    metrics = _json(metrics_file) if metrics_file.exists() else {}
    config = _json(config_file) if config_file.exists() else metrics.get("config", {})
    history = read_log(log) if log.exists() else []
    subs = {}
    if (path / "runs").is_dir():
        for sub in sorted((path / "runs").iterdir()):
            if sub.is_dir() and ((sub / "config.json").exists() or (sub / "metrics.json").exists()):
                subs[sub.name] = load_run(sub)
    return FinishedRun(path, config, metrics, history, subs)
