"""Names in the shipped package say what they hold."""

from __future__ import annotations

import ast
from pathlib import Path

import ext_authz

ROOT = Path(ext_authz.__file__).resolve().parent


def _shipped() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(ROOT.rglob("*.py"))
    ]


def test_no_shipped_class_has_a_field_named_just_keys() -> None:
    """`keys` said five things (`parsed.keys.keys`): each field now says which keys it
    holds (`key_set`, `verification_keys`, `key_provider`...). The policy schema keeps
    the YAML's own `keys:` section; `IssuerKeys.keys` is a read-only alias (a property)
    kept for the modules that still read it."""
    found = []
    for where, tree in _shipped():
        for cls in ast.walk(tree):
            if not isinstance(cls, ast.ClassDef) or where == "policy/schema.py":
                continue
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "keys":
                    found.append(f"{where}: {cls.name}")
                if isinstance(node, ast.Assign) and "'keys'" in ast.unparse(node.value):
                    found.append(f"{where}: {cls.name} (__slots__)")
    assert not found
