"""The plugin documentation and the tests keep up with the hook specifications.

After Datasette's ``tests/test_docs.py`` and ``tests/test_plugins.py``: a hook whose documented
signature differs from its specification fails here, and so does a hook without a behavioural
test (a test function named ``test_hook_<hook name without insurdesk_>...`` in this folder).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HERE = Path(__file__).resolve().parent


def signature(spec: Callable[..., Any]) -> str:
    """``name(param: Type, ...) -> Return`` as written in the spec module."""
    sig = inspect.signature(spec)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{spec.__name__}({params}) -> {sig.return_annotation}"


def documented() -> dict[str, str]:
    """Hook name → the signature heading of its section in docs/plugins.md."""
    headings = re.findall(r"^### (insurdesk_\w+\(.*)$", DOCS.read_text(), re.MULTILINE)
    return {h.split("(", 1)[0]: h.strip() for h in headings}


def test_every_hook_is_documented_under_its_exact_signature() -> None:
    docs = documented()
    assert sorted(docs) == sorted(hookspecs.HOOK_NAMES)
    for name in hookspecs.HOOK_NAMES:
        assert docs[name] == signature(getattr(hookspecs, name)), name


@pytest.mark.parametrize("name", hookspecs.HOOK_NAMES)
def test_every_hook_spec_has_a_full_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    spec = getattr(hookspecs, name)
    assert ":returns:" in doc, name
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name}: :param {param}: is not documented"
    if inspect.signature(spec).parameters:  # hooks called on several plugins say how
        assert "ombined" in doc, f"{name} does not say how results combine"


def test_every_hook_has_a_behavioural_test() -> None:
    tests: set[str] = set()
    for path in HERE.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                tests.add(node.name)
    missing = [
        name
        for name in hookspecs.HOOK_NAMES
        if not any(t.startswith(f"test_hook_{name.removeprefix('insurdesk_')}") for t in tests)
    ]
    assert missing == [], f"hooks without a test_hook_<name> test: {missing}"
