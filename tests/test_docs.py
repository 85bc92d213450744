"""README's generated tables match the code (run `python -m hub.docs` to refresh them)."""

from pathlib import Path

from hub.docs import MARKERS, render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_are_current():
    text = README.read_text()
    for start, end in MARKERS.values():
        assert start in text and end in text
    assert render(text) == text, "README is stale: run `python -m hub.docs`"


def test_readme_names_the_two_setup_commands():
    text = README.read_text()
    assert "scripts/demo.sh" in text and "scripts/test.sh" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
