"""Splicing a regenerated reply onto the text clients were shown (reply/failover.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reply.failover import Continuation, Delta, Op, Retract


def apply(shown: str, ops: list[Op]) -> str:
    text = shown
    for op in ops:
        text = op.text if isinstance(op, Retract) else text + op.text
    return text


def run(shown: str, pieces: list[str]) -> list[Op]:
    c = Continuation(shown)
    ops: list[Op] = []
    for piece in pieces:
        ops += c.feed(piece)
    return ops + c.finish()


def test_the_same_reply_again_continues_seamlessly_after_what_was_shown() -> None:
    ops = run("Our beans ", ["Our ", "beans ", "ship ", "Monday."])
    assert ops == [Delta("ship "), Delta("Monday.")]


def test_a_different_reply_is_one_failover_retract_then_deltas() -> None:
    ops = run("Our beans ", ["We ", "roast ", "daily."])
    assert ops == [Retract("We "), Delta("roast "), Delta("daily.")]
    assert {op.reason for op in ops if isinstance(op, Retract)} == {"failover"}


def test_a_reply_that_ends_inside_what_was_shown_withdraws_the_rest() -> None:
    assert run("Our beans ship Monday.", ["Our ", "beans."]) == [Retract("Our beans.")]


def test_nothing_shown_means_plain_deltas() -> None:
    assert run("", ["Hi", " there"]) == [Delta("Hi"), Delta(" there")]


@given(shown=st.text(max_size=30), pieces=st.lists(st.text(max_size=8), max_size=10))
def test_clients_end_with_exactly_the_new_reply_whatever_they_were_shown(shown: str, pieces: list[str]) -> None:
    ops = run(shown, pieces)
    assert apply(shown, ops) == "".join(pieces)
    assert sum(isinstance(op, Retract) for op in ops) <= 1
