"""docs/cases.md shows the lifecycle table as it is in the code."""

from __future__ import annotations

from pathlib import Path

from core.cases import lifecycle

DOC = Path(__file__).resolve().parents[2] / "docs" / "cases.md"


def test_the_lifecycle_section_of_the_docs_is_generated_from_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert lifecycle.update_doc(text) == text, (
        "docs/cases.md is out of date: run `python -m core.cases.lifecycle`"
    )


def test_every_case_type_has_a_diagram_and_every_action_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for t in lifecycle.TRANSITIONS:
        assert f"### {t.case_type.value}" in text
        assert f"| `{t.action}` |" in text
    assert text.count("stateDiagram-v2") == len({t.case_type for t in lifecycle.TRANSITIONS})
