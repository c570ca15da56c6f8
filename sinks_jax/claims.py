"""Named, checkable claims: `{name, kind, paper_value, measured, threshold, passed}` in
metrics.json.

A claim's `kind` says what a pass means (`KINDS`): `identity`, an exact mathematical fact checked
numerically (it cannot fail unless the code is wrong); `construction`, a hand-built object has the
property it was built with; `sanity`, training converged or losses match (a precondition of the
science, not the science); `reproduction`, an effect a paper reports, measured on a trained or
simulated system (it can fail); `extension`, a question the papers do not answer.

A claim whose precondition does not hold (`check_if`) is *undefined*: it keeps its measurement,
gets `passed: false` (so a count of passed claims stays a plain sum) and an `undefined` field with
the reason, and is shown as UNDEFINED rather than FAIL in claims tables. Claims made with `check`
are unchanged (no `undefined` field in metrics.json)."""

from __future__ import annotations

import dataclasses
import math
import operator
from pathlib import Path
from typing import Any

import numpy as np

_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "in": lambda x, interval: interval[0] <= x <= interval[1],  # closed interval (lo, hi)
}


KINDS = ("identity", "construction", "sanity", "reproduction", "extension")


@dataclasses.dataclass(frozen=True)
class Claim:
    name: str
    paper_value: Any  # the paper's number, or its qualitative statement
    measured: Any
    threshold: str  # e.g. ">= 0.8"
    passed: bool
    undefined: str | None = None  # why the claim cannot be tested (then passed is False)
    kind: str | None = None  # one of KINDS (None: not yet labelled)

    def as_dict(self) -> dict[str, Any]:
        """The claim for metrics.json; `undefined` and `kind` only when set."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for optional in ("undefined", "kind"):
            if d[optional] is None:
                del d[optional]
        return d


def check(
    name: str,
    measured: Any,
    op: str,
    bound: Any,
    paper_value: Any = None,
    *,
    kind: str | None = None,
) -> Claim:
    """Compare `measured` with `bound` (op one of >=, <=, >, <, ==, or `in` with a (lo, hi)
    closed interval). A missing or non-finite measurement fails the claim rather than raising.
    `kind` (one of `KINDS`) says what a pass means."""
    if op not in _OPS:
        raise ValueError(f"unknown claim operator {op!r}; use one of {sorted(_OPS)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown claim kind {kind!r}; use one of {KINDS}")
    measured = to_jsonable(measured)
    ok = measured is not None and not (isinstance(measured, float) and not math.isfinite(measured))
    passed = bool(ok and _OPS[op](measured, bound))
    threshold = f"in [{bound[0]}, {bound[1]}]" if op == "in" else f"{op} {bound}"
    return Claim(name, paper_value, measured, threshold, passed, kind=kind)


def check_if(
    precondition: bool,
    reason: str,
    name: str,
    measured: Any,
    op: str,
    bound: Any,
    paper_value: Any = None,
    *,
    kind: str | None = None,
) -> Claim:
    """`check(name, measured, op, bound, paper_value, kind=kind)` when `precondition` holds;
    otherwise the claim is undefined (not failed): its measurement is kept, `passed` is False and
    `undefined` says why (`reason`), e.g. a ratio whose denominator model has no clear sink."""
    claim = check(name, measured, op, bound, paper_value, kind=kind)
    if precondition:
        return claim
    return dataclasses.replace(claim, passed=False, undefined=reason)


def status(claim: Claim) -> str:
    """PASS, FAIL or UNDEFINED."""
    if claim.undefined is not None:
        return "UNDEFINED"
    return "PASS" if claim.passed else "FAIL"


def counts(claims: list[Claim]) -> dict[str, int]:
    """How many claims passed, failed and were undefined (passed + failed + undefined = all)."""
    kinds = [status(c) for c in claims]
    return {k.lower(): kinds.count(k) for k in ("PASS", "FAIL", "UNDEFINED")}


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b <= 0 (a ratio to a reference that is absent fails its claim; JSON null)."""
    return a / b if b > 0 else float("nan")


def to_jsonable(x: Any) -> Any:
    """numpy / jax scalars and arrays to plain Python (NaN/inf become None in JSON)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, Claim):
        return to_jsonable(x.as_dict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if hasattr(x, "__array__") and not isinstance(x, str | bytes):
        arr = np.asarray(x)
        return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def text_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Rows of dicts (same keys) as an aligned plain-text or markdown table."""
    if not rows:
        return ""
    header = list(rows[0])
    cells = [header] + [[_cell(r.get(k)) for k in header] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "---|" * len(header))
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(claims: list[Claim], markdown: bool = False) -> str:
    """The claims table for the terminal (or markdown)."""
    rows = [
        {
            "claim": c.name,
            "kind": c.kind,
            "paper": c.paper_value,
            "measured": c.measured,
            "threshold": c.threshold,
            "ok": status(c),
        }
        for c in claims
    ]
    return text_table(rows, markdown)


def write_metrics(path: Path, payload: dict[str, Any]) -> None:
    """Write metrics.json atomically (a crash never leaves a half-written file)."""
    from sinks_jax.run_dir import atomic_write_json  # local: run_dir uses to_jsonable

    atomic_write_json(path, payload)
