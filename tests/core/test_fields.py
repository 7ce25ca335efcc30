"""Field helpers shared by dialects, rules and routes."""

import pytest

from app.core.fields import is_count


@pytest.mark.parametrize(("text", "expected"), [("0", True), ("42", True), ("9" * 18, True)])
def test_plain_counts_are_counts(text: str, expected: bool) -> None:
    assert is_count(text) is expected
    assert int(text) >= 0


@pytest.mark.parametrize("text", ["", "-1", "1.5", "²", "١٢", " 1", "9" * 19, "9" * 5000])
def test_what_int_refuses_or_overflows_is_not_a_count(text: str) -> None:
    assert not is_count(text)
