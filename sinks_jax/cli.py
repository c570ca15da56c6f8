"""One command-line shape for every experiment and proof module:

    python -m experiments.<name> [--preset quick|paper] [--out DIR] [--seed S] [--steps N]
                                 [--resume] [--set field=value ...] [--pdf]

A module defines `EXPERIMENT = Experiment(name, description, presets, run)` and calls
`main(EXPERIMENT)`. `run(cfg, ctx)` returns a dict with `claims` and optionally `tables`
({title: rows}); `main` adds the resolved config and timings, writes `metrics.json` and
`report.md`, prints the tables and the claims, and exits 0 whatever the claims say.

Before `run` starts, every override is applied and the final config validated once, and the
output folder is opened as a run folder (`sinks_jax.run_dir`: locked for the whole run; a fresh
run archives a previous run; `--resume` checks the saved config). Bad input (`SinksJaxError`)
ends in one line on stderr and exit code 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from sinks_jax import claims as claims_lib
from sinks_jax import run_dir
from sinks_jax.config import apply_overrides, field_paths, leaf_defaults, to_dict
from sinks_jax.errors import (
    ConfigError,
    OneLineParser,
    SinksJaxError,
    Terminated,
    signals_raise,
)


@dataclasses.dataclass(frozen=True)
class RunContext:
    out_dir: Path
    preset: str
    resume: bool | run_dir.Resume  # pass on to the training functions as it is
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
    # Set when `train.steps` is not the module's step budget: what sets it instead. `--steps`
    # and `--set train.steps=N` are then refused (ConfigError) with this text.
    steps_unused: str = ""


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
        f"outputs: results/{exp.name}/<preset>/ (or --out): run.json (the mark of a run "
        "folder), metrics.json, report.md, metrics.jsonl, config.json, checkpoints/ and PNG "
        "figures\n\n"
        "runs that lose nothing: a run locks its folder (run.lock; a second run into it exits 2); "
        "a fresh run moves a previous run's files to archive/<time>/ and refuses a non-empty "
        "folder that is not a run folder, the current folder or a parent of it. --resume "
        "continues from the newest intact checkpoint (a damaged one is set aside in "
        "checkpoints.damaged/) only with the saved config: only train.steps may grow, and under "
        "a cosine schedule (whose horizon is train.steps) only with --extend-schedule, which "
        "starts a new, longer schedule from the checkpoint. Exit codes: 0 run complete "
        "(whatever the claims say), 2 bad input (one line on stderr), 130 interrupted "
        "(Ctrl-C), 143 terminated (SIGTERM); run.json's status says how the run ended "
        "(complete, failed: …, interrupted, terminated, crashed: …)."
    )
    parser = OneLineParser(
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
        default=None,
        help=f"output directory (default: results/{exp.name}/<preset>)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"not used: {exp.steps_unused}"
        if exp.steps_unused
        else "override the number of training steps (train.steps)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint in the output directory (the config "
        "must match the saved one; only train.steps may grow)",
    )
    parser.add_argument(
        "--extend-schedule",
        action="store_true",
        help="with --resume: let a larger train.steps re-stretch a cosine schedule (a new "
        "schedule; refused without this flag)",
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
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first, for a multi-host GPU/TPU cluster (SLURM and "
        "TPU pods are detected; else set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID); see the README's 'Many devices' section",
    )
    return parser


def _module_of(exp: Experiment) -> str:
    main_mod = sys.modules.get("__main__")
    spec = getattr(main_mod, "__spec__", None)
    return spec.name if spec is not None else f"experiments.{exp.name}"


def resolve_config(exp: Experiment, args: argparse.Namespace) -> Any:
    """The preset with `--seed`, `--steps` and every `--set` applied, validated once."""
    cfg = exp.presets[args.preset]
    overrides = list(args.overrides)
    if exp.steps_unused:
        sets_steps = any(o.split("=", 1)[0].strip() == "train.steps" for o in overrides)
        if args.steps is not None or sets_steps:
            flag = "--steps" if args.steps is not None else "--set train.steps"
            raise ConfigError(f"{flag} does not apply to {exp.name}: {exp.steps_unused}")
    if args.seed is not None:
        overrides.insert(0, f"seed={args.seed}")
    if args.steps is not None:
        if not any(f[0] == "train.steps" for f in field_paths(type(cfg))):
            raise ConfigError(f"--steps does not apply to {exp.name} (no train.steps field)")
        overrides.insert(0, f"train.steps={args.steps}")
    return apply_overrides(cfg, overrides)


def main(exp: Experiment, argv: list[str] | None = None) -> int:
    args = build_parser(exp).parse_args(argv)
    if args.distributed:
        jax.distributed.initialize()  # before any computation; every process runs this command
    try:
        with signals_raise(Terminated, signal.SIGTERM):
            return _run(exp, args, argv)
    except SinksJaxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as err:
        what = "interrupted" if isinstance(err, KeyboardInterrupt) else str(err)
        print(
            f"{what}; checkpoints written so far are kept (rerun with --resume)",
            file=sys.stderr,
        )
        return 130 if isinstance(err, KeyboardInterrupt) else 128 + err.signum


def _run(exp: Experiment, args: argparse.Namespace, argv: list[str] | None) -> int:
    if args.extend_schedule and not args.resume:
        raise ConfigError("--extend-schedule goes with --resume")
    cfg = resolve_config(exp, args)
    out_dir = Path("results") / exp.name / args.preset if args.out is None else args.out
    resume = run_dir.Resume(args.extend_schedule) if args.resume else False
    mark = {
        "experiment": exp.name,
        "module": _module_of(exp),
        "preset": args.preset,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "status": "running",
        "config": to_dict(cfg),
    }

    def check_previous(saved: dict[str, Any]) -> None:
        if saved.get("experiment") != exp.name:
            raise ConfigError(
                f"cannot resume {out_dir}: it holds a run of {saved.get('experiment')!r}, "
                f"not {exp.name!r}"
            )
        run_dir.check_resume_config(
            saved.get("config", {}),
            to_dict(cfg),
            where=Path(out_dir),
            extend_schedule=args.extend_schedule,
            defaults=leaf_defaults(type(cfg)),
        )

    with run_dir.open_run(
        out_dir, resume=bool(resume), mark=mark, check_previous=check_previous
    ) as out:
        ctx = RunContext(out_dir=out, preset=args.preset, resume=resume, pdf=args.pdf)
        t0 = time.perf_counter()
        from sinks_jax import plotting  # matplotlib only once a run starts

        with plotting.style():
            payload = exp.run(cfg, ctx)
        wall = time.perf_counter() - t0
        claims = payload.pop("claims", [])
        write_results(exp, args.preset, cfg, out, wall, claims, payload)
        run_dir.write_mark(out, {**mark, "status": "complete", "wall_time_s": wall})
    n = claims_lib.counts(claims)
    undefined = f" ({n['undefined']} undefined)" if n["undefined"] else ""
    print(
        f"\n{exp.name} [{args.preset}]: {n['pass']}/{len(claims)} claims passed{undefined} in "
        f"{wall:.1f} s; results in {out}/"
    )
    return 0


def write_results(
    exp: Experiment,
    preset: str,
    cfg: Any,
    out: Path,
    wall: float,
    claims: list[claims_lib.Claim],
    payload: dict[str, Any],
) -> None:
    """metrics.json and report.md (each written atomically); the tables and claims printed.

    `payload["notes"]` (a list of sentences, optional) becomes report.md's "What was seen"."""
    metrics = {
        "experiment": exp.name,
        "preset": preset,
        "config": to_dict(cfg),
        "wall_time_s": wall,
        "environment": environment(),
        "claims": claims,
        **payload,
    }
    claims_lib.write_metrics(out / "metrics.json", metrics)
    report = [f"## Claims\n\n{claims_lib.format_table(claims, markdown=True)}"]
    notes = payload.get("notes", [])  # what was seen, in words (e.g. why a claim fails)
    if notes:
        report.append("## What was seen\n\n" + "\n".join(f"- {n}" for n in notes))
    for title, rows in payload.get("tables", {}).items():
        print(f"{title}\n{claims_lib.text_table(rows)}\n")
        report.append(f"## {title}\n\n{claims_lib.text_table(rows, markdown=True)}")
    run_dir.atomic_write_text(
        out / "report.md", f"# {exp.name} [{preset}]\n\n" + "\n\n".join(report)
    )
    print(claims_lib.format_table(claims))


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
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
