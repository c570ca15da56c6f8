"""One HTML page for a set of runs: claims, figures, configs, wall times and the environment.

    python -m sinks_jax.report_html results/all/quick       # writes results/all/quick/report.html
    python -m sinks_jax.report_html results/reference --out /tmp/reference.html --embed

`ROOT` holds one folder per module, each either a run folder (`<module>/metrics.json`, as
`experiments.all` writes) or a preset level above one (`<module>/<preset>/metrics.json`, as
`results/reference`). `render(...)` is a pure function of the files it is given; figures are linked
relative to the page (`link_from`) or embedded as data URIs (`link_from=None`, self-contained).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks_jax.errors import DataError, OneLineParser, SinksJaxError
from sinks_jax.results_tables import (
    claim_counts,
    claim_status,
    fmt,
    kinds_line,
    module_order,
    ordered,
    read_env,
    read_metrics,
    reproduced_cell,
)


@dataclass(frozen=True)
class ModuleRun:
    name: str
    folder: Path | None  # None: the module has no results (it failed or was skipped)
    metrics: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)  # env.json (reference runs)
    status: str = "ok"


def find_runs(
    root: str | Path, preset: str = "quick", only: Iterable[str] | None = None
) -> list[ModuleRun]:
    """Every module folder under `root` with a metrics.json (`<m>/` or `<m>/<preset>/`), or
    only those named in `only` (others, e.g. leftovers of earlier runs, are not read)."""
    runs = {}
    root = Path(root)
    wanted = None if only is None else set(only)
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if wanted is not None and sub.name not in wanted:
            continue
        folder = next((f for f in (sub, sub / preset) if (f / "metrics.json").is_file()), None)
        if folder is None or not inside(folder, root):
            continue
        metrics = read_metrics(folder / "metrics.json")
        runs[sub.name] = ModuleRun(sub.name, folder, metrics, read_env(folder / "env.json"))
    return [runs[n] for n in ordered(runs, module_order())]


def inside(path: Path, root: Path) -> bool:
    """True if `path` is no link and resolves below `root`: what the page may read."""
    return not path.is_symlink() and path.resolve().is_relative_to(root.resolve())


def describe(name: str) -> str:
    """The first paragraph of `EXPERIMENT.description`, or '' if the module does not import."""
    import importlib

    from experiments.all import MODULES, short_name

    module = next((m for m in MODULES if short_name(m) == name), None)
    if module is None:
        return ""
    try:
        text = str(importlib.import_module(module).EXPERIMENT.description)
    except Exception:  # a caption is optional
        return ""
    return " ".join(text.strip().split("\n\n")[0].split())  # its first paragraph


def machine() -> dict[str, str]:
    """Where the page was made (for runs that do not record it)."""
    return {"platform": platform.platform(), "python (page)": platform.python_version()}


def figures_of(run: ModuleRun) -> tuple[list[Path], list[str]]:
    """The PNGs in the run folder (metrics.json's order first) and the listed ones not there.
    Only regular files count: a link (to a system file, say) is neither shown nor embedded."""
    assert run.folder is not None
    listed = [f for f in run.metrics.get("figures", []) if str(f).endswith(".png")]
    present = sorted(
        p.name
        for p in run.folder.glob("*.png")
        if p.is_file() and inside(p, run.folder)  # is_file: not a folder named x.png
    )
    names = [f for f in listed if f in present] + [f for f in present if f not in listed]
    return [run.folder / n for n in names], [f for f in listed if f not in present]


def _src(path: Path, link_from: Path | None) -> str:
    if link_from is None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"data:image/png;base64,{data}"
    rel = os.path.relpath(path.resolve(), link_from.resolve())
    return "/".join(html.escape(part, quote=True) for part in Path(rel).parts)


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else fmt(value))


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.PASS { background: #e3f6e3; } td.FAIL { background: #fbe2e2; }
td.UNDEFINED { background: #fff4d6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.summary { font-size: 1.1em; font-weight: 600; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; max-width: 620px; vertical-align: top; }
figure img { max-width: 600px; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
table.claims td { max-width: 26em; overflow-wrap: anywhere; }
.why { display: block; font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.muted { color: #777; }
"""


def render(
    runs: list[ModuleRun],
    title: str,
    link_from: Path | None,
    descriptions: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    missing: Iterable[str] = (),
) -> str:
    """The page (a complete HTML document) for `runs`; `missing` names modules without a run."""
    descriptions = descriptions or {}
    done = [r for r in runs if r.folder is not None]
    all_claims = [(r.name, c) for r in done for c in r.metrics.get("claims", [])]
    n = claim_counts(c for _, c in all_claims)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{html.escape(kinds_line(n))}</p>',
        f"<p>{n['pass']} passed / {n['total']} claims / {n['undefined']} "
        f"undefined ({n['fail']} failed) in {len(done)} module(s)</p>",
    ]
    # Overview
    parts.append(
        "<table><tr><th>module</th><th>status</th><th>seed</th><th>reproduced</th>"
        "<th>passed</th><th>claims</th><th>undefined</th><th>wall time (s)</th></tr>"
    )
    for r in runs:
        if r.folder is None:
            parts.append(
                f'<tr><td><a href="#{r.name}">{html.escape(r.name)}</a></td>'
                f'<td class="FAIL">{html.escape(r.status)}</td>' + "<td></td>" * 6 + "</tr>"
            )
            continue
        k = claim_counts(r.metrics.get("claims", []))
        wall = r.env.get("wall_time_s", r.metrics.get("wall_time_s"))
        seed = r.metrics.get("config", {}).get("seed")
        parts.append(
            f'<tr><td><a href="#{r.name}">{html.escape(r.name)}</a></td>'
            f"<td>{html.escape(r.status)}</td><td class='num'>{_e(seed)}</td>"
            f"<td class='num'>{reproduced_cell(k)}</td>"
            f"<td class='num'>{k['pass']}</td><td class='num'>{k['total']}</td>"
            f"<td class='num'>{k['undefined']}</td>"
            f"<td class='num'>{'—' if wall is None else f'{float(wall):.0f}'}</td></tr>"
        )
    parts.append("</table>")
    if missing := list(missing):
        parts.append(f'<p class="muted">no run: {html.escape(", ".join(missing))}</p>')
    # Every claim
    parts.append('<h2>Claims</h2><table class="claims"><tr><th>module</th><th>claim</th>')
    parts.append("<th>kind</th>")
    parts.append("<th>paper value</th>")
    parts.append("<th>measured</th><th>threshold</th><th>pass</th></tr>")
    for name, c in all_claims:
        status = claim_status(c)
        why = (
            f'<span class="why">{html.escape(str(c["undefined"]))}</span>'
            if "undefined" in c
            else ""
        )
        parts.append(
            f"<tr><td>{html.escape(name)}</td><td>{_e(c.get('name'))}</td>"
            f"<td>{_e(c.get('kind'))}</td><td>{_e(c.get('paper_value'))}</td>"
            f"<td class='num'>{_e(c.get('measured'))}</td>"
            f"<td>{_e(c.get('threshold'))}</td><td class='{status}'>{status}{why}</td></tr>"
        )
    parts.append("</table>")
    # Per module: description, figures, config, wall time
    for r in runs:
        desc = descriptions.get(r.name, "")
        parts.append(f'<h2 id="{html.escape(r.name)}">{html.escape(r.name)}</h2>')
        if desc:
            parts.append(f"<p>{html.escape(desc)}</p>")
        if r.folder is None:
            parts.append(f'<p class="muted">no results: {html.escape(r.status)}</p>')
            continue
        k = claim_counts(r.metrics.get("claims", []))
        wall = r.env.get("wall_time_s", r.metrics.get("wall_time_s"))
        wall_text = "—" if wall is None else f"{float(wall):.1f} s"
        parts.append(
            f"<p>{k['pass']}/{k['total']} claims passed ({k['undefined']} undefined); "
            f"wall time {wall_text}; preset {_e(r.metrics.get('preset'))}; "
            f"folder <code>{html.escape(str(r.folder))}</code></p>"
        )
        figures, absent = figures_of(r)
        for fig in figures:
            caption = f"{fig.name} — {r.name}" + (f": {desc}" if desc else "")
            src = _src(fig, link_from)
            img = f'<img src="{src}" alt="{html.escape(fig.name)}" loading="lazy">'
            if link_from is not None:  # a linked figure opens at full size
                img = f'<a href="{src}">{img}</a>'
            parts.append(f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>")
        if absent:
            parts.append(
                '<p class="muted">figures not in this folder (see the run folder): '
                + ", ".join(html.escape(a) for a in absent)
                + "</p>"
            )
        config = json.dumps(r.metrics.get("config", {}), indent=2)
        parts.append(
            f"<details><summary>config</summary><pre>{html.escape(config)}</pre></details>"
        )
    # Environment
    parts.append("<h2>Environment</h2><table><tr><th>field</th><th>value(s)</th></tr>")
    env: dict[str, list[str]] = {}
    keys = ("python", "jax", "flax", "optax", "backend", "devices", "platform", "cpu", "date")
    for r in done:
        merged = {**r.metrics.get("environment", {}), **r.env}
        for key in keys:
            if key in merged:
                value = fmt(merged[key]) if not isinstance(merged[key], str) else merged[key]
                env.setdefault(key, [])
                if value not in env[key]:
                    env[key].append(value)
    for key, value in (extra_env or {}).items():
        env.setdefault(key, [value])
    for key, values in env.items():
        parts.append(
            f"<tr><td>{html.escape(key)}</td><td>{html.escape(', '.join(values))}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def write(
    root: str | Path,
    out: str | Path | None = None,
    preset: str = "quick",
    embed: bool = False,
    status: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Render the page for `root` and write it atomically to `out` (default root/report.html).

    `status` ({module: status}, as `experiments.all` keeps it) picks the modules shown, those
    without results (failed, skipped) included."""
    from sinks_jax.run_dir import atomic_write_text

    root = Path(root)
    out = root / "report.html" if out is None else Path(out)
    if out.is_dir():  # a folder: the page goes into it
        out = out / "report.html"
    runs = find_runs(root, preset, only=status.keys() if status else None)
    if status:
        have = {r.name: r for r in runs}
        runs = [  # only the modules of this invocation, not leftovers of earlier ones
            ModuleRun(n, None, status=s) if n not in have else _with_status(have[n], s)
            for n, s in status.items()
        ]
    names = {r.name for r in runs}
    missing = [] if status else [m for m in module_order() if m not in names]
    descriptions = {r.name: describe(r.name) for r in runs}
    page = render(
        runs,
        title or f"sinks_jax results: {root}",
        None if embed else out.parent,
        descriptions,
        machine(),
        missing,
    )
    atomic_write_text(out, page)
    return out


def _with_status(run: ModuleRun, status: str) -> ModuleRun:
    return ModuleRun(run.name, run.folder, run.metrics, run.env, status)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m sinks_jax.report_html",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", help="a results/all/<preset> folder or results/reference")
    parser.add_argument(
        "--out", help="the page's file, or a folder to write report.html into (default ROOT)"
    )
    parser.add_argument("--preset", default="quick", help="for ROOT/<module>/<preset>/ layouts")
    parser.add_argument("--embed", action="store_true", help="embed figures (data URIs)")
    args = parser.parse_args(argv)
    try:
        if not Path(args.root).is_dir():
            raise DataError(f"{args.root} is not a folder")
        out = write(args.root, args.out, args.preset, args.embed)
    except SinksJaxError as err:  # a malformed metrics.json or env.json: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the page cannot be written there
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: cannot write the page: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
