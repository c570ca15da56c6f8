"""Regenerate every figure and claim: run each experiment and proof module with one preset.

    python -m experiments.all --preset quick            # every module, CPU presets
    python -m experiments.all --only lm_sinks,over_mixing
    python -m experiments.all --list

Each module runs in its own process (as `python -m <module> --preset P --out DIR/<name>`), so one
failure does not stop the others. A module without the preset (e.g. `text`, which only the
small-GPT modules have) is skipped. At the end the claims of every module are summarised in
`DIR/summary.md` (default DIR: results/all/<preset>).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODULES = (
    "experiments.bigram_backcopy",
    "experiments.residual_peak",
    "experiments.optimizer_mitigations",
    "experiments.two_domain_heads",
    "proofs_numeric.mutual_reinforcement",
    "proofs_numeric.adam_vs_sgd_peak",
    "proofs_numeric.ctr_construction",
    "proofs_numeric.one_layer_cannot_average",
    "experiments.ctr_emergence",
    "experiments.ctr_low_rank",
    "experiments.sink_free_averaging",
    "proofs_numeric.over_mixing",
    "experiments.lm_sinks",
    "experiments.context_length_sweep",
    "experiments.depth_sweep",
    "experiments.packing_sweep",
)


def short_name(module: str) -> str:
    return module.rsplit(".", 1)[1]


def presets_of(module: str) -> list[str]:
    import importlib

    return list(importlib.import_module(module).EXPERIMENT.presets)


def select(only: str | None) -> list[str]:
    if not only:
        return list(MODULES)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {short_name(m): m for m in MODULES}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"error: unknown module(s) {unknown}; known: {', '.join(known)}")
    return [known[w] for w in wanted]


def summarise(out_root: Path, modules: list[str], status: dict[str, str]) -> str:
    lines = ["| module | status | claims passed | wall time (s) |", "|---|---|---|---|"]
    for m in modules:
        name = short_name(m)
        path = out_root / name / "metrics.json"
        passed, wall = "—", "—"
        if status[m] == "ok" and path.exists():
            metrics = json.loads(path.read_text())
            claims = metrics.get("claims", [])
            passed = f"{sum(c['passed'] for c in claims)}/{len(claims)}"
            wall = f"{metrics.get('wall_time_s', 0):.0f}"
        lines.append(f"| {name} | {status[m]} | {passed} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="quick", help="preset for every module (default quick)")
    parser.add_argument("--only", default=None, help="comma-separated module names")
    parser.add_argument("--out", type=Path, default=None, help="default: results/all/<preset>")
    parser.add_argument("--list", action="store_true", help="list the modules and their presets")
    args = parser.parse_args(argv)
    modules = select(args.only)
    if args.list:
        for m in modules:
            print(f"{m:42s} presets: {', '.join(presets_of(m))}")
        return 0
    out_root = args.out or Path("results") / "all" / args.preset
    status: dict[str, str] = {}
    for m in modules:
        if args.preset not in presets_of(m):
            status[m] = f"no '{args.preset}' preset"
            continue
        cmd = [
            sys.executable,
            "-m",
            m,
            "--preset",
            args.preset,
            "--out",
            str(out_root / short_name(m)),
        ]
        print(f"[all] {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        status[m] = "ok" if rc == 0 else f"exit {rc}"
        print(f"[all] {short_name(m)}: {status[m]} in {time.perf_counter() - t0:.0f} s", flush=True)
    table = summarise(out_root, modules, status)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "summary.md").write_text(f"# All modules [{args.preset}]\n\n{table}\n")
    print(table)
    return 0 if all(s == "ok" or s.startswith("no ") for s in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
