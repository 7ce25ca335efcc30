import gc
from collections.abc import Iterator

import pytest

from app.runtime import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_freezes_what_is_alive_and_widens_the_young_generation(restored_collector: None) -> None:
    gc.unfreeze()
    probe: list[object] = []  # a container, which the collector tracks
    assert any(o is probe for o in gc.get_objects())
    collector.settle()
    # In the permanent generation now, which no collection walks.
    assert not any(o is probe for generation in range(3) for o in gc.get_objects(generation))
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
