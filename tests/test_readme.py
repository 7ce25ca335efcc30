"""The README stays a short guide whose first-event example uses the key `make run` configures."""

from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_development_key_is_the_one_make_run_uses() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "SLUICE_API_KEYS ?= dev_key_123:dev" in makefile
    assert "X-API-Key: dev_key_123" in README


def test_the_readme_is_a_short_guide() -> None:
    assert len(README.splitlines()) <= 250
