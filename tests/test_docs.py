"""The docs stay true to the code: the settings table is generated from the settings' doc strings."""

import re
from pathlib import Path

from app.settings import Settings, markdown_table

REPO = Path(__file__).resolve().parents[1]
OPERATIONS = REPO / "docs" / "operations.md"
BEGIN, END = "<!-- settings:begin -->\n", "\n<!-- settings:end -->"


def settings_section() -> str:
    text = OPERATIONS.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


def test_the_settings_table_is_the_generated_one() -> None:
    assert settings_section() == markdown_table(), "docs/operations.md's settings table drifted: run `make docs`"


def test_every_setting_is_in_the_table() -> None:
    table = markdown_table()
    missing = sorted(name for name in Settings.env_names() - {"KAFKA_BOOTSTRAP_SERVERS"} if f"`{name}`" not in table)
    assert not missing


def test_no_development_history_in_the_code_or_the_docs() -> None:
    history = re.compile(r"stop [0-9]+|issue [0-9]+|REFERENCE\.md|this session", re.IGNORECASE)
    files = [
        REPO / "README.md",
        REPO / "CONTRIBUTING.md",
        *(REPO / "docs").rglob("*.md"),
        *(REPO / "app").rglob("*.py"),
    ]
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in files
        for n, line in enumerate(path.open(), 1)
        if history.search(line)
    ]
    assert not found, "history belongs in git log, not in the tree"
