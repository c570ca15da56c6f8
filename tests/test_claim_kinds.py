"""Every claim says what a pass means (issue 27 §1): each `check` / `check_if` call of an
experiment or proof module names a `kind`, one of `sinks_jax.claims.KINDS` where it is literal.
A static check, so that a claim on a code path no tiny test reaches is labelled too."""

import ast
from pathlib import Path

import pytest

from sinks_jax.claims import KINDS

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    p for folder in ("experiments", "proofs_numeric") for p in (ROOT / folder).glob("*.py")
)


def claim_calls(tree: ast.Module) -> list[ast.Call]:
    """Calls of the names imported from sinks_jax.claims as check / check_if."""
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "sinks_jax.claims"
        for alias in node.names
        if alias.name in ("check", "check_if")
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}.{p.stem}")
def test_every_claim_names_its_kind(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for call in claim_calls(tree):
        kind = next((k.value for k in call.keywords if k.arg == "kind"), None)
        where = f"{path.name}:{call.lineno}"
        assert kind is not None, f"{where}: a claim without kind=… (one of {KINDS})"
        if isinstance(kind, ast.Constant):
            assert kind.value in KINDS, f"{where}: kind {kind.value!r} is not one of {KINDS}"


def test_the_static_check_sees_claims():
    tree = ast.parse("from sinks_jax.claims import check as c\nc('a', 1, '>=', 0)\n")
    assert len(claim_calls(tree)) == 1
