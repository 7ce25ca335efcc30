"""The worker applies each partition's records strictly in offset order and commits only what it applied."""

from app.worker.progress import Admission, Progress

P = ("events.orders", 0)


def test_contiguous_records_are_applied_and_move_the_position_on() -> None:
    progress = Progress()
    progress.start(P, 10)
    assert [progress.admit(P, offset) for offset in (10, 11, 12)] == [Admission.NEXT] * 3
    assert progress.position(P) == 13


def test_a_record_after_a_hole_is_not_applied_until_the_hole_is_filled() -> None:
    progress = Progress()
    progress.start(P, 74)
    for offset in range(74, 79):
        progress.admit(P, offset)
    # faust dropped 79..366: what comes after the hole waits, and the position stays at the hole.
    assert progress.admit(P, 367) is Admission.GAP
    assert progress.admit(P, 368) is Admission.GAP
    assert progress.position(P) == 79
    # After the seek back, the hole's records come first, then the ones dropped at the hole.
    assert progress.admit(P, 79) is Admission.NEXT
    assert progress.position(P) == 80


def test_records_seen_again_after_a_seek_are_old() -> None:
    progress = Progress()
    progress.start(P, 5)
    for offset in (5, 6, 7):
        progress.admit(P, offset)
    assert progress.admit(P, 6) is Admission.OLD
    assert progress.admit(P, 3) is Admission.OLD
    assert progress.position(P) == 8


def test_a_seek_is_due_once_per_hole_and_again_while_the_hole_stays_open() -> None:
    progress = Progress(seek_every_s=1.0)
    progress.start(P, 10)
    assert progress.seeks_due(now=99.0) == []
    progress.admit(P, 12)
    assert progress.seeks_due(now=100.0) == [(P, 10)]
    assert progress.seeks_due(now=100.5) == []  # records buffered past the hole still arriving
    assert progress.seeks_due(now=101.2) == [(P, 10)]  # the seek came to nothing: seek again
    progress.admit(P, 10)
    assert progress.seeks_due(now=101.3) == [(P, 11)]  # 11 still missing
    progress.admit(P, 11)
    progress.admit(P, 12)
    assert progress.seeks_due(now=105.0) == []  # filled: nothing to seek


def test_reset_forgets_every_partition() -> None:
    progress = Progress()
    progress.start(P, 5)
    progress.reset()
    assert not progress.knows(P)


def test_a_hole_at_the_tail_is_sought_back_once_the_position_stays_put() -> None:
    progress = Progress(seek_every_s=1.0)
    progress.start(P, 88)
    # The consumer fetched up to 778, faust dropped 88..777, and nothing came after them.
    assert progress.stuck({P: 778}, now=0.0) == []
    assert progress.stuck({P: 778}, now=1.5) == []
    assert progress.stuck({P: 778}, now=2.0) == [(P, 88)]
    # Not again at once: the seek needs time to bring the records.
    assert progress.stuck({P: 778}, now=2.5) == []
    assert progress.stuck({P: 778}, now=4.0) == [(P, 88)]


def test_a_partition_that_moves_on_or_has_nothing_fetched_is_not_stuck() -> None:
    progress = Progress(seek_every_s=1.0)
    progress.start(P, 10)
    assert progress.stuck({P: 10}, now=0.0) == []
    assert progress.stuck({P: 10}, now=5.0) == []  # nothing fetched beyond: a quiet partition
    assert progress.stuck({P: 20}, now=5.0) == []
    progress.admit(P, 10)
    assert progress.stuck({P: 20}, now=6.5) == []  # it moved: the clock starts again
    assert progress.stuck({P: 20}, now=8.5) == [(P, 11)]


def test_a_partition_with_records_waiting_that_never_come_is_stuck() -> None:
    progress = Progress(seek_every_s=1.0)
    progress.start(P, 40)
    # The consumer fetches nothing (its position stays at 40) while the log runs to 90.
    assert progress.stuck({P: 40}, now=0.0, ends={P: 90}) == []
    assert progress.stuck({P: 40}, now=2.0, ends={P: 90}) == [(P, 40)]
    # Nor when the consumer has no position for it at all.
    progress.start(P, 40)
    assert progress.stuck({}, now=3.0, ends={P: 90}) == []
    assert progress.stuck({}, now=5.0, ends={P: 90}) == [(P, 40)]
    # At the log's end it is only quiet.
    progress.start(P, 90)
    assert progress.stuck({P: 90}, now=6.0, ends={P: 90}) == []
    assert progress.stuck({P: 90}, now=9.0, ends={P: 90}) == []


def test_offsets_without_records_are_skipped_and_what_follows_is_applied() -> None:
    progress = Progress()
    progress.start(P, 0)
    assert [progress.admit(P, offset) for offset in (0, 1, 2)] == [Admission.NEXT] * 3
    assert progress.admit(P, 4) is Admission.GAP  # offset 3 is a transaction marker
    progress.skip(P, 4)  # the broker shows the records go on at 4
    assert progress.position(P) == 4
    assert progress.admit(P, 4) is Admission.NEXT  # refetched after the seek to 4
    progress.skip(P, 2)  # never backwards
    assert progress.position(P) == 5


def test_a_run_that_starts_at_the_position_is_admitted_at_once() -> None:
    progress = Progress()
    progress.start(P, 10)
    assert progress.admit_run(P, 10, 3)
    assert progress.position(P) == 13
    # One that does not start there (a hole before it, or records seen before) is admitted
    # one by one instead: nothing moves.
    assert not progress.admit_run(P, 20, 2)
    assert not progress.admit_run(P, 11, 5)
    assert progress.position(P) == 13


def test_a_run_that_fills_a_hole_closes_it() -> None:
    progress = Progress()
    progress.start(P, 79)
    assert progress.admit(P, 83) is Admission.GAP
    assert progress.admit_run(P, 79, 3)
    assert progress.seeks_due(0.0) == [(P, 82)]  # 82 is still missing: seek back there
    assert progress.admit_run(P, 82, 2)
    assert progress.seeks_due(10.0) == []  # past the furthest record seen: no hole left
