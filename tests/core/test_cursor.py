"""Cursors: every partition's next offset, round-tripped; anything else is a 400 naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import cursor
from app.errors import ValidationError


@given(st.dictionaries(st.integers(0, 63), st.integers(0, 2**62), max_size=64))
def test_a_cursor_decodes_to_the_positions_it_encodes(positions: dict[int, int]) -> None:
    assert cursor.decode(cursor.encode(positions), "after", 64) == positions


@given(st.text(max_size=40))
def test_any_text_decodes_or_is_refused_naming_the_field(text: str) -> None:
    try:
        positions = cursor.decode(text, "Last-Event-ID", 4)
    except ValidationError as exc:
        assert exc.field == "Last-Event-ID"
    else:
        assert all(0 <= p < 4 and o >= 0 for p, o in positions.items())


@pytest.mark.parametrize("text", ["!!", cursor.encode({9: 1}), "MDo1LDA6Ng", "eDp5"])
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        cursor.decode(text, "after", 4)
    assert (caught.value.field, caught.value.code) == ("after", "invalid_cursor")


def test_a_position_past_the_end_is_refused_and_the_end_itself_is_fine() -> None:
    cursor.check_reachable({0: 5, 1: 0}, {0: 5, 1: 3}, "after")
    with pytest.raises(ValidationError) as caught:
        cursor.check_reachable({0: 6}, {0: 5, 1: 3}, "after")
    assert (caught.value.field, caught.value.code) == ("after", "invalid_cursor")
