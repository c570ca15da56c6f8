"""The README's results section, generated from committed reference results, never typed.

    python -m sinks_jax.results_tables                 # print the section
    python -m sinks_jax.results_tables --write         # put it into README.md between the markers
    python -m sinks_jax.results_tables --check         # exit 1 if README.md disagrees
    python -m sinks_jax.results_tables --add RUN_DIR   # copy a finished run into the reference
    python -m sinks_jax.results_tables --stale         # reference configs vs the current presets

Reference results live in `results/reference/<module>/<preset>/`: the run's `metrics.json`,
`report.md` and `config.json`, at most a key figure under 200 KB, and `env.json` (versions,
machine, date, seed and the run folder it came from). Checkpoints and logs are never copied.
The section between `<!-- results:begin -->` and `<!-- results:end -->` in README.md is a pure
function of those files: an overview table (seed, claims passed / failed / undefined, wall time)
and every module's claims (paper value, measured, threshold, status), numbers to 4 significant
digits. Everything outside the markers is left alone, except *table blocks*: a README block

    <!-- table: <module>/<preset> | <table name> -->
    <!-- table:end -->

is filled with the table of that name from `results/reference/<module>/<preset>/metrics.json`
(its `tables`), by the same `--write` and checked by `--check`: tables of any preset (a `cpu` or
`gpu` reference beside the quick ones) shown where the prose needs them.

Exit status: 0 done (or the README matches), 1 the README is stale (`--check`) or a reference
run's config is not the module's current preset (`--stale`), 2 bad input in one line: a missing
or empty `--root`, a malformed metrics.json or env.json, a README without the markers, a table
block that would lose its table, a run to `--add` that is missing, running or not the suite's.
Nothing is written on bad input.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sinks_jax.claims import KINDS
from sinks_jax.errors import DataError, OneLineParser, SinksJaxError

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
REFERENCE = Path("results") / "reference"
README = Path("README.md")
MAX_FIGURE_BYTES = 200_000
# The figure kept with each module's reference run (the others stay in the run folder).
KEY_FIGURES = {
    "bigram_backcopy": "attention_no_trigger.png",
    "residual_peak": "ablation_layer0_gap.png",
    "optimizer_mitigations": "layer0_bos_residual.png",
    "two_domain_heads": "head_maps_first_token.png",
    "mutual_reinforcement": "mutual_reinforcement.png",
    "adam_vs_sgd_peak": "adam_vs_sgd.png",
    "ctr_construction": "construction_error.png",
    "one_layer_cannot_average": "one_layer_cannot_average.png",
    "ctr_emergence": "sink_vs_rel_mse.png",
    "ctr_low_rank": "low_rank.png",
    "sink_free_averaging": "sink_free_averaging.png",
    "over_mixing": "required_sink_vs_depth.png",
    "lm_sinks": "sink_rate_over_training.png",
    "context_length_sweep": "sink_vs_context.png",
    "depth_sweep": "sink_vs_depth.png",
    "depth_design": "sink_heads_vs_depth.png",
    "packing_sweep": "loss_table.png",
    "text_sink_search": "first_position_score.png",
    "attention_variants": "variants_table.png",
    "lm_phenomenology": "delimiter_sinks.png",
}


# ---------------------------------------------------------------------------------------------
# Module order and numbers


def module_order() -> list[str]:
    """Short module names in `experiments.all` order (the README's order)."""
    from experiments.all import MODULES, short_name  # light: imports no experiment

    return [short_name(m) for m in MODULES]


def fmt(value: Any, digits: int = 4) -> str:
    """A compact cell: floats to `digits` significant digits, lists and dicts shortened."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        text = f"{value:.{digits}g}"
        if "e" in text:  # 1.234e-05 -> 1.234e-5
            mantissa, exp = text.split("e")
            text = f"{mantissa}e{int(exp)}"
        return text
    if isinstance(value, list | tuple):
        shown = [fmt(v, digits) for v in value[:6]]
        return "[" + ", ".join(shown) + (", …" if len(value) > 6 else "") + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v, digits)}" for k, v in value.items()) + "}"
    return str(value)


def md_cell(value: Any) -> str:
    """A markdown table cell: formatted, one line, `|` and tag-like `<` (`Attn_<s>`) escaped."""
    text = value if isinstance(value, str) else fmt(value)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", " ".join(text.split()))
    return text.replace("|", "\\|") or "—"


def claim_status(claim: Mapping[str, Any]) -> str:
    if "undefined" in claim:
        return "UNDEFINED"
    return "PASS" if claim.get("passed") else "FAIL"


def claim_counts(claims: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Claims passed, failed, undefined and in all; `reproduced` / `reproductions`: the passed
    and all claims of kind `reproduction` (what a paper reports, measured here); one count per
    kind (`unlabelled`: claims of runs made before claims had kinds)."""
    claims = list(claims)
    statuses = [claim_status(c) for c in claims]
    kinds = [c.get("kind") or "unlabelled" for c in claims]
    reproductions = [s for s, k in zip(statuses, kinds, strict=True) if k == "reproduction"]
    return {
        "pass": statuses.count("PASS"),
        "fail": statuses.count("FAIL"),
        "undefined": statuses.count("UNDEFINED"),
        "total": len(statuses),
        "reproduced": reproductions.count("PASS"),
        "reproductions": len(reproductions),
        **{f"kind:{k}": kinds.count(k) for k in (*KINDS, "unlabelled")},
        "unlabelled_pass": sum(
            s == "PASS" for s, k in zip(statuses, kinds, strict=True) if k == "unlabelled"
        ),
    }


def reproduced_cell(n: Mapping[str, int]) -> str:
    """'X/Y' reproduction claims passed, '—' where no claim is labelled."""
    if n["kind:unlabelled"] == n["total"]:
        return "—"
    return f"{n['reproduced']}/{n['reproductions']}"


def kinds_line(n: Mapping[str, int]) -> str:
    """'paper effects reproduced: X of Y; other claims: 12 identity, …' for a headline. Where
    some claims are unlabelled (runs made before kinds), X of Y counts the labelled ones only,
    and the line says so and how the unlabelled ones fared, so that it cannot read as the
    whole."""
    others = ", ".join(
        f"{n[f'kind:{k}']} {k}" for k in KINDS if k != "reproduction" and n[f"kind:{k}"]
    )
    line = (
        f"paper effects reproduced: {n['reproduced']} of {n['reproductions']} reproduction "
        f"claims; other claims: {others or 'none'}"
    )
    if unlabelled := n["kind:unlabelled"]:
        line = (
            f"{line} — counted over the runs whose claims have kinds only: {unlabelled} claims "
            f"of runs made before kinds are not counted ({n['unlabelled_pass']} of them pass)"
        )
    return line


# ---------------------------------------------------------------------------------------------
# Reading the reference


def read_json(path: str | Path) -> Any:
    """The JSON in `path`, or DataError (one line naming the file) when it cannot be read or
    parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    except (ValueError, RecursionError) as err:  # an integer too long, nesting too deep
        raise DataError(f"{path}: not JSON this tool reads ({type(err).__name__})") from None


def _kind(value: Any) -> str:
    return f"a JSON {type(value).__name__}".replace("dict", "object").replace("str", "string")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A run's metrics.json, checked for the shape the tables read: an object whose `claims`
    is a list of objects with a `name`, `config` an object, `tables` an object of lists of
    objects, `experiment` and `preset` strings (where present). Else DataError."""
    path = Path(path)
    metrics = read_json(path)

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; not a sinks_jax metrics.json")

    if not isinstance(metrics, dict):
        raise bad(f"holds {_kind(metrics)}, not an object")
    claims = metrics.get("claims", [])
    if not isinstance(claims, list):
        raise bad(f"'claims' is {_kind(claims)}, not a list")
    for i, claim in enumerate(claims):
        if not isinstance(claim, dict) or not isinstance(claim.get("name"), str):
            raise bad(f"claim {i} is not an object with a 'name'")
        if claim.get("kind", KINDS[0]) not in KINDS:
            raise bad(f"claim {i} has kind {claim['kind']!r}, not one of {', '.join(KINDS)}")
    for key in ("config", "environment", "tables"):
        if key in metrics and not isinstance(metrics[key], dict):
            raise bad(f"'{key}' is {_kind(metrics[key])}, not an object")
    for title, rows in metrics.get("tables", {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise bad(f"table {title!r} is not a list of objects")
    for key in ("experiment", "preset"):
        if key in metrics and not isinstance(metrics[key], str):
            raise bad(f"'{key}' is {_kind(metrics[key])}, not a string")
    figures = metrics.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(f, str) for f in figures):
        raise bad("'figures' is not a list of file names")
    _check_wall_time(metrics, path)
    return metrics


def _check_wall_time(payload: Mapping[str, Any], path: Path) -> None:
    wall = payload.get("wall_time_s")
    if wall is None:
        return
    try:
        finite = not isinstance(wall, bool) and math.isfinite(float(wall))
    except (TypeError, ValueError, OverflowError):
        finite = False
    if not finite:
        raise DataError(f"{path}: 'wall_time_s' is {_kind(wall)}, not a finite number")


def read_env(path: str | Path) -> dict[str, Any]:
    """A reference run's env.json ({} when absent), or DataError."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return {}
    env = read_json(path)
    if not isinstance(env, dict):
        raise DataError(f"{path}: holds {_kind(env)}, not an object")
    _check_wall_time(env, path)
    return env


def load_reference(root: str | Path = REFERENCE, preset: str = "quick") -> dict[str, dict]:
    """{module: {"metrics": ..., "env": ...}} for every `root/<module>/<preset>/metrics.json`.

    DataError (one line) when `root` is not a folder, holds no run of `preset` (rendering it
    would empty the README's tables), or a file is malformed."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder of reference runs (run from the repository root, or pass "
            "--root)"
        )
    found = {}
    for path in sorted(root.glob(f"*/{preset}/metrics.json")):
        found[path.parent.parent.name] = {
            "metrics": read_metrics(path),
            "env": read_env(path.parent / "env.json"),
        }
    if not found:
        raise DataError(f"{root} holds no reference run (<module>/{preset}/metrics.json)")
    return found


def ordered(names: Iterable[str], order: list[str]) -> list[str]:
    """`names` in `order`, unknown ones after it in alphabetical order."""
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def wall_time(entry: Mapping[str, Any]) -> float | None:
    """The run's wall time: env.json's (the training run, when the claims were re-derived by a
    resume) or metrics.json's."""
    wall = entry["env"].get("wall_time_s", entry["metrics"].get("wall_time_s"))
    return float(wall) if isinstance(wall, int | float) else None


# ---------------------------------------------------------------------------------------------
# Rendering


def render(
    root: str | Path = REFERENCE, preset: str = "quick", order: list[str] | None = None
) -> str:
    """The README section (markdown, without the markers) for the reference under `root`."""
    runs = load_reference(root, preset)
    order = module_order() if order is None else order
    names = ordered(runs, order)
    missing = [n for n in order if n not in runs]
    out = [
        f"<!-- generated by `python -m sinks_jax.results_tables --write` from "
        f"{Path(root).as_posix()}/*/{preset}/metrics.json; do not edit by hand -->",
        "",
        f"Reference runs at `{preset}` scale (`{Path(root).as_posix()}/<module>/{preset}/`: each "
        "run's `metrics.json`, `report.md`, `config.json` and `env.json`, the machine and the "
        "folder it came from).",
        "",
        "| module | seed | reproduced | passed | failed | undefined | claims | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    totals = claim_counts(c for n in names for c in runs[n]["metrics"].get("claims", []))
    for name in names:
        entry = runs[name]
        n = claim_counts(entry["metrics"].get("claims", []))
        wall = wall_time(entry)
        seed = entry["metrics"].get("config", {}).get("seed", entry["env"].get("seed"))
        out.append(
            f"| `{name}` | {md_cell(seed)} | {reproduced_cell(n)} | {n['pass']} | {n['fail']} | "
            f"{n['undefined']} | {n['total']} | {'—' if wall is None else f'{wall:.0f}'} |"
        )
    out.append(
        f"| **all** | | **{reproduced_cell(totals)}** | {totals['pass']} | {totals['fail']} | "
        f"{totals['undefined']} | {totals['total']} | |"
    )
    out += [
        "",
        f"Headline: {kinds_line(totals)}. `reproduced` counts the claims of kind `reproduction` "
        "(an effect a paper reports, measured here; it can fail); the other kinds are "
        "`identity`, `construction`, `sanity` and `extension` (`sinks_jax.claims`), and "
        "`unlabelled` claims come from runs made before claims had kinds.",
    ]
    if missing:
        out += ["", "No reference run yet: " + ", ".join(f"`{m}`" for m in missing) + "."]
    for name in names:
        entry = runs[name]
        claims = entry["metrics"].get("claims", [])
        n = claim_counts(claims)
        seed = entry["metrics"].get("config", {}).get("seed", entry["env"].get("seed"))
        undefined = f", {n['undefined']} undefined" if n["undefined"] else ""
        out += [
            "",
            f"<details><summary><code>{name}</code> (seed {fmt(seed)}): "
            f"{n['pass']}/{n['total']} passed{undefined}"
            + ("" if reproduced_cell(n) == "—" else f"; reproduced {reproduced_cell(n)}")
            + "</summary>",
            "",
            "| claim | kind | paper | measured | threshold | status |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for c in claims:
            status = claim_status(c)
            if status == "UNDEFINED":
                status = f"UNDEFINED: {c['undefined']}"
            out.append(
                f"| {md_cell(c.get('name'))} | {md_cell(c.get('kind'))} | "
                f"{md_cell(c.get('paper_value'))} | {md_cell(c.get('measured'))} | "
                f"{md_cell(c.get('threshold'))} | {md_cell(status)} |"
            )
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


TABLE_BLOCK = re.compile(
    r"(?P<head><!-- table: (?P<src>[^\s|]+) \| (?P<name>[^\n]*?) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- table:end -->)",
    re.S,
)


def render_table(root: str | Path, src: str, name: str) -> str:
    """The markdown of table `name` of the reference run `root/src` (a line saying it is missing
    when the run or the table is absent)."""
    path = Path(root) / src / "metrics.json"
    if not path.exists():
        return f"{NO_RUN} `{Path(root).as_posix()}/{src}`.\n"
    rows = read_metrics(path).get("tables", {}).get(name)
    if not rows:
        return f"{NO_TABLE} {name!r} in `{path.as_posix()}`.\n"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [
        "| " + " | ".join(md_cell(c) for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(md_cell(row.get(c)) for c in columns) + " |" for row in rows]
    lines.append(f"\n<sub>Generated from `{path.as_posix()}`.</sub>")
    return "\n".join(lines) + "\n"


NO_RUN, NO_TABLE = "No reference run yet:", "No table"


def fill_tables(text: str, root: str | Path = REFERENCE) -> str:
    """`text` with every table block's body rendered anew from the reference. A block that
    holds a table is never emptied: DataError when its run or table is missing under `root`."""

    def fill(m: re.Match[str]) -> str:
        body = render_table(root, m["src"], m["name"])
        had_table = any(line.startswith("|") for line in m["body"].splitlines())
        if had_table and body.startswith((NO_RUN, NO_TABLE)):
            raise DataError(
                f"table block '{m['src']} | {m['name']}': {body.strip()}; refusing to replace "
                "the README's table by nothing (wrong --root or working folder?)"
            )
        return m["head"] + body + m["end"]

    return TABLE_BLOCK.sub(fill, text)


class MarkerError(ValueError):
    """The README lacks the markers (or has them out of order, or more than once)."""


def section_bounds(text: str) -> tuple[int, int]:
    """Start and end offsets of the text between the markers."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise MarkerError(f"README must hold {BEGIN} and {END} once each")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    if end < start:
        raise MarkerError(f"{END} comes before {BEGIN}")
    return start, end


def splice(text: str, section: str) -> str:
    """`text` with the part between the markers replaced by `section`."""
    start, end = section_bounds(text)
    return text[:start] + "\n" + section + text[end:]


def current_section(text: str) -> str:
    start, end = section_bounds(text)
    return text[start:end].removeprefix("\n")


def diff_summary(old: str, new: str) -> str:
    """One line: how many lines differ and the first difference."""
    a, b = old.splitlines(), new.splitlines()
    changed = [
        line
        for line in difflib.unified_diff(a, b, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    removed = sum(line.startswith("-") for line in changed)
    first = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    was = a[first] if first < len(a) else "<end>"
    now = b[first] if first < len(b) else "<end>"
    return (
        f"{removed} README line(s) not rendered, {len(changed) - removed} rendered line(s) not in "
        f"the README; first difference at section line {first + 1}: README {was[:60]!r}, "
        f"rendered {now[:60]!r}"
    )


# ---------------------------------------------------------------------------------------------
# Is the reference still the code's preset?


def stale(root: str | Path = REFERENCE, preset: str = "quick") -> dict[str, list[str]]:
    """{module: differences} between each reference run's config and the module's current preset
    (at the run's seed); an empty list where they agree. Imports every module (seconds)."""
    import importlib

    from experiments.all import MODULES, short_name
    from sinks_jax.config import apply_overrides, leaf_defaults, to_dict
    from sinks_jax.run_dir import config_differences

    modules = {short_name(m): m for m in MODULES}
    out = {}
    for name, entry in load_reference(root, preset).items():
        have = entry["metrics"].get("config", {})
        try:
            exp = importlib.import_module(modules[name]).EXPERIMENT
            cfg = exp.presets[preset]
            if "seed" in have:
                cfg = apply_overrides(cfg, [f"seed={have['seed']}"])
            want = json.loads(json.dumps(to_dict(cfg)))
        except Exception as err:  # reported per module
            out[name] = [f"cannot build the current preset: {type(err).__name__}: {err}"]
            continue
        # a field added to the code since the run counts as its default (its old behaviour)
        out[name] = config_differences(have, want, defaults=leaf_defaults(type(cfg)))
    return out


# ---------------------------------------------------------------------------------------------
# Adding a run to the reference


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores visible)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores visible)"


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


def reference_folder(root: str | Path, name: Any, preset: Any) -> Path:
    """`root/<name>/<preset>` for a known module and one of its presets, or DataError: the
    names come from a run's metrics.json (possibly from another machine), so nothing they say
    may reach outside `root`."""
    known = module_order()
    if not isinstance(name, str) or name not in known:
        raise DataError(f"metrics.json names experiment {name!r}, not a module of this suite")
    if not isinstance(preset, str) or not PRESET_NAME.match(preset):
        raise DataError(f"metrics.json names preset {preset!r}, not a preset name")
    from experiments.all import MODULES, presets_or_error, short_name

    presets = presets_or_error(next(m for m in MODULES if short_name(m) == name))
    if isinstance(presets, str):
        raise DataError(f"cannot check the presets of {name}: {presets}")
    if preset not in presets:
        raise DataError(f"{name} has no preset {preset!r} (presets: {', '.join(presets)})")
    dest = Path(root) / name / preset
    if dest.parent.is_symlink() or dest.is_symlink():
        raise DataError(f"{dest} goes through a link; refusing to write there")
    if dest.resolve() != Path(root).resolve() / name / preset:
        raise DataError(f"{dest} resolves outside {root}; refusing to write there")
    return dest


def add_run(
    run: str | Path,
    root: str | Path = REFERENCE,
    source: str | None = None,
    wall_time_s: float | None = None,
    note: str | None = None,
) -> Path:
    """Copy a finished run's small outputs into `root/<module>/<preset>/` with an env.json.

    `source` names where it came from (default: `run`); `wall_time_s` overrides the recorded
    wall time (e.g. the training run's, when the claims were re-derived by `--resume`).
    Everything is read and checked first; the new reference is built in a folder beside the
    old one and swapped in by renames, so a failure at any point leaves the old one whole.
    DataError for a missing, running or malformed run, or names that are not the suite's."""
    from sinks_jax.run_dir import FOLDER_MODE, atomic_write_json, in_use

    run = Path(run)
    if not (run / "metrics.json").is_file():
        raise DataError(f"--add {run}: no metrics.json there (not a finished run folder)")
    read = ("metrics.json", "run.json", "report.md", "config.json", *KEY_FIGURES.values())
    if links := [f for f in dict.fromkeys(read) if (run / f).is_symlink()]:
        raise DataError(f"--add {run}: {', '.join(links)} is a link; refusing to copy links")
    if in_use(run):
        raise DataError(f"--add {run}: a run is still writing it (run.lock is held)")
    mark = read_json(run / "run.json") if (run / "run.json").exists() else {}
    if not isinstance(mark, dict):
        raise DataError(f"{run / 'run.json'}: holds {_kind(mark)}, not an object")
    if mark and mark.get("status") != "complete":
        raise DataError(f"{run} is not a complete run (run.json status {mark.get('status')!r})")
    metrics = read_metrics(run / "metrics.json")
    name, preset = metrics.get("experiment"), metrics.get("preset")
    dest = reference_folder(root, name, preset)
    config = read_json(run / "config.json") if (run / "config.json").exists() else None
    if config is None:  # multi-run modules keep a config per training run
        config = metrics.get("config")  # the module's is in metrics.json
    if not isinstance(config, dict):
        raise DataError(f"{run}: no config (neither config.json nor metrics.json's 'config')")
    finished = datetime.datetime.fromtimestamp(
        (run / "metrics.json").stat().st_mtime, tz=datetime.UTC
    )
    env = {
        **metrics.get("environment", {}),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "date": finished.isoformat(timespec="seconds"),
        "module": mark.get("module", name),
        "preset": preset,
        "seed": metrics.get("config", {}).get("seed"),
        "argv": mark.get("argv"),
        "source": str(source or run),
        "wall_time_s": metrics.get("wall_time_s") if wall_time_s is None else wall_time_s,
    }
    if note:
        env["note"] = note
    key = KEY_FIGURES.get(str(name))
    copies = [f for f in ("metrics.json", "report.md", "config.json") if (run / f).is_file()]
    if key and (run / key).is_file() and (run / key).stat().st_size < MAX_FIGURE_BYTES:
        copies.append(key)

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{preset}.incoming-", dir=dest.parent))
    try:
        staging.chmod(FOLDER_MODE)  # mkdtemp makes 0700; a reference is shared
        for f in copies:
            shutil.copy2(run / f, staging / f)
        if "config.json" not in copies:
            atomic_write_json(staging / "config.json", config)
        atomic_write_json(staging / "env.json", env)
        _swap_in(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _swap_in(new: Path, dest: Path) -> None:
    """Put folder `new` at `dest` by renames; an old `dest` is removed only once `new` is in
    place (and put back if that fails)."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    try:
        os.replace(dest, old)  # onto the empty folder just made
    except BaseException:
        old.rmdir()
        raise
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    try:
        shutil.rmtree(old)
    except OSError as err:  # the new reference is in place: say so, do not fail
        print(f"warning: the replaced reference is left in {old}: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m sinks_jax.results_tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the README section")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README disagrees")
    mode.add_argument("--add", metavar="RUN_DIR", help="copy a finished run into the reference")
    mode.add_argument(
        "--stale",
        action="store_true",
        help="list reference runs whose config is not the module's current preset (exit 1)",
    )
    parser.add_argument("--root", default=str(REFERENCE), help=f"default {REFERENCE}")
    parser.add_argument("--readme", default=str(README), help=f"default {README}")
    parser.add_argument("--preset", default="quick", help="default quick")
    parser.add_argument("--source", help="with --add: where the run came from (env.json)")
    parser.add_argument("--wall-time", type=float, help="with --add: the training wall time (s)")
    parser.add_argument("--note", help="with --add: a note for env.json")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except (SinksJaxError, MarkerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the README or the reference cannot be written
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    """Exit 0 done / README current, 1 README stale (`--check`) or reference not the current
    presets (`--stale`); bad input raises (exit 2 in `main`), touching nothing."""
    if args.add:
        dest = add_run(args.add, args.root, args.source, args.wall_time, args.note)
        print(f"added {args.add} as {dest}")
        return 0
    if args.stale:
        diffs = stale(args.root, args.preset)
        for name, diff in diffs.items():
            print(f"{name}: " + ("current" if not diff else "; ".join(diff)))
        return 1 if any(diffs.values()) else 0
    section = render(args.root, args.preset)
    if not (args.write or args.check):
        print(section, end="")
        return 0
    readme = Path(args.readme)
    text = read_text(readme)
    try:
        old = current_section(text)
    except MarkerError as err:
        raise DataError(f"{readme}: {err}") from None
    filled = fill_tables(text, args.root)
    if args.check:
        if old == section and filled == text:
            print(f"{readme}: results section and table blocks match {args.root}")
            return 0
        if old == section:
            print(
                f"{readme}: a table block is stale; run `python -m sinks_jax.results_tables "
                "--write`",
                file=sys.stderr,
            )
            return 1
        print(
            f"{readme}: results section is stale: {diff_summary(old, section)}; "
            "run `python -m sinks_jax.results_tables --write`",
            file=sys.stderr,
        )
        return 1
    new = fill_tables(splice(text, section), args.root)
    if new != text:
        from sinks_jax.run_dir import atomic_write_text

        atomic_write_text(readme, new)
        print(f"{readme}: results section and table blocks rewritten from {args.root}")
    else:
        print(f"{readme}: results section and table blocks already match {args.root}")
    return 0


def read_text(path: Path) -> str:
    """A README's text, or DataError (one line)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise DataError(f"{path}: {err.strerror or err}") from None


if __name__ == "__main__":
    raise SystemExit(main())
