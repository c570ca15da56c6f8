"""One command-line shape for every experiment and proof module:

    python -m experiments.<name> [--preset quick|paper] [--out DIR] [--seed S] [--steps N]
                                 [--resume] [--set field=value ...] [--pdf]

A module defines `EXPERIMENT = Experiment(name, description, presets, run)` and calls
`main(EXPERIMENT)`. `run(cfg, ctx)` returns a dict with `claims` and optionally `tables`
({title: rows}); `main` adds the resolved config and timings, writes `metrics.json` and
`report.md`, prints the tables and the claims, and exits 0 whatever the claims say. Bad input
(`SinksJaxError`, a missing file) ends in one message and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from sinks_jax import claims as claims_lib
from sinks_jax.config import apply_overrides, field_paths, to_dict
from sinks_jax.errors import ConfigError, SinksJaxError


@dataclasses.dataclass(frozen=True)
class RunContext:
    out_dir: Path
    preset: str
    resume: bool
    pdf: bool

    def save_figure(self, fig, name: str) -> list[str]:
        from sinks_jax import plotting

        return plotting.save(fig, self.out_dir, name, self.pdf)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    presets: dict[str, Any]  # preset name -> config dataclass (first = default)
    run: Callable[[Any, RunContext], dict[str, Any]]
    preset_notes: dict[str, str] = dataclasses.field(default_factory=dict)


def build_parser(exp: Experiment) -> argparse.ArgumentParser:
    default_cfg = next(iter(exp.presets.values()))
    presets = "\n".join(f"  {name:8s} {exp.preset_notes.get(name, '')}" for name in exp.presets)
    fields = "\n".join(
        f"  {path} ({kind}, default {default!r})"
        for path, kind, default in field_paths(type(default_cfg))
    )
    epilog = (
        f"presets:\n{presets}\n\nconfig fields (override with --set field=value; "
        f"defaults shown are the dataclass defaults, presets change some):\n{fields}\n\n"
        f"outputs: results/{exp.name}/<preset>/metrics.json, metrics.jsonl, config.json, "
        "checkpoints/ and PNG figures"
    )
    parser = argparse.ArgumentParser(
        prog=f"python -m {_module_of(exp)}",
        description=textwrap.dedent(exp.description),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        default=next(iter(exp.presets)),
        choices=list(exp.presets),
        help="named configuration (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output directory (default: results/{exp.name}/<preset>)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="override the number of training steps (train.steps)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in the output directory",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any config field, e.g. --set model.n_layers=3 (repeatable)",
    )
    parser.add_argument("--pdf", action="store_true", help="also save figures as PDF")
    return parser


def _module_of(exp: Experiment) -> str:
    main_mod = sys.modules.get("__main__")
    spec = getattr(main_mod, "__spec__", None)
    return spec.name if spec is not None else f"experiments.{exp.name}"


def resolve_config(exp: Experiment, args: argparse.Namespace) -> Any:
    cfg = exp.presets[args.preset]
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.insert(0, f"seed={args.seed}")
    if args.steps is not None:
        if not any(f[0] == "train.steps" for f in field_paths(type(cfg))):
            raise ConfigError(f"--steps does not apply to {exp.name} (no train.steps field)")
        overrides.insert(0, f"train.steps={args.steps}")
    return apply_overrides(cfg, overrides)


def main(exp: Experiment, argv: list[str] | None = None) -> int:
    args = build_parser(exp).parse_args(argv)
    try:
        cfg = resolve_config(exp, args)
        out_dir = args.out or Path("results") / exp.name / args.preset
        ctx = RunContext(out_dir=out_dir, preset=args.preset, resume=args.resume, pdf=args.pdf)
        t0 = time.perf_counter()
        payload = exp.run(cfg, ctx)
        wall = time.perf_counter() - t0
    except (SinksJaxError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; checkpoints written so far are kept (rerun with --resume)",
            file=sys.stderr,
        )
        return 130
    claims = payload.pop("claims", [])
    metrics = {
        "experiment": exp.name,
        "preset": args.preset,
        "config": to_dict(cfg),
        "wall_time_s": wall,
        "environment": environment(),
        "claims": claims,
        **payload,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    claims_lib.write_metrics(out_dir / "metrics.json", metrics)
    report = [f"## Claims\n\n{claims_lib.format_table(claims, markdown=True)}"]
    for title, rows in payload.get("tables", {}).items():
        print(f"{title}\n{claims_lib.text_table(rows)}\n")
        report.append(f"## {title}\n\n{claims_lib.text_table(rows, markdown=True)}")
    (out_dir / "report.md").write_text(f"# {exp.name} [{args.preset}]\n\n" + "\n\n".join(report))
    print(claims_lib.format_table(claims))
    n_pass = sum(c.passed for c in claims)
    print(
        f"\n{exp.name} [{args.preset}]: {n_pass}/{len(claims)} claims passed in {wall:.1f} s; "
        f"results in {out_dir}/"
    )
    return 0


def environment() -> dict[str, Any]:
    import flax
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
