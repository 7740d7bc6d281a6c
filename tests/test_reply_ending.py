"""How a reply ends (reply/ending.py): every outcome's closing events and which fallback it gets."""

from __future__ import annotations

import json

import pytest

from llm.exceptions import UpstreamRateLimited, UpstreamTimeout
from persona.brand import Fallbacks
from reply.ending import FALLBACK_KIND, Outcome, closing_events, fallback_text
from streaming.events import StoredEvent
from streaming.log import StreamWriter, fold_text

FALLBACKS = Fallbacks(off_topic="Off topic.", off_brand="Off brand.", error="Error.", truncated="Cut.")
BARE = Fallbacks(off_topic="Off topic.", off_brand="Off brand.")


def writer(text: str = "") -> StreamWriter:
    w = StreamWriter("s_1", max_events=100, max_chars=1000)
    w.start("c_1", "m_1")
    if text:
        w.delta(text)
    return w


def payloads(events: list[StoredEvent]) -> list[dict[str, object]]:
    return [json.loads(e.data) for e in events]


@pytest.mark.parametrize("rule", sorted(FALLBACK_KIND))
def test_each_guard_rule_gets_the_fallback_of_its_kind(rule: str) -> None:
    expected = FALLBACKS.off_topic if FALLBACK_KIND[rule] == "off_topic" else FALLBACKS.off_brand
    assert fallback_text(FALLBACKS, rule) == expected


def test_an_unknown_rule_is_off_brand_and_empty_or_truncated_use_their_own_fallbacks() -> None:
    assert fallback_text(FALLBACKS, "something_new") == "Off brand."
    assert fallback_text(FALLBACKS, "empty") == "Error."
    assert fallback_text(BARE, "empty") == "Off topic."
    assert fallback_text(FALLBACKS, "truncated") == "Cut."


@pytest.mark.parametrize("finish", ["stop", "length", "cancelled"])
def test_a_reply_that_stopped_normally_ends_with_done_and_its_text(finish: str) -> None:
    w = writer("Hello.")
    (done,) = payloads(closing_events(w, FALLBACKS, Outcome(finish=finish)))  # type: ignore[arg-type]
    assert done == {"type": "done", "stream_id": "s_1", "seq": 3, "finish_reason": finish, "text": "Hello."}


def test_a_guard_violation_after_text_retracts_it_in_favour_of_the_fallback() -> None:
    w = writer("As an AI")
    events = closing_events(w, FALLBACKS, Outcome(violation="filler"))
    assert [p["type"] for p in payloads(events)] == ["retract", "done"]
    assert payloads(events)[0]["text"] == "Off brand." and payloads(events)[0]["reason"] == "filler"
    assert payloads(events)[1]["finish_reason"] == "fallback" and fold_text(events) == "Off brand."


def test_a_guard_violation_before_any_text_sends_the_fallback_as_the_first_delta() -> None:
    events = closing_events(writer(), FALLBACKS, Outcome(violation="prompt_leak"))
    assert [(p["type"], p.get("text")) for p in payloads(events)] == [("delta", "Off topic."), ("done", "Off topic.")]


def test_the_guards_own_replacement_wins_over_the_fallback() -> None:
    events = closing_events(writer("One. Two"), FALLBACKS, Outcome(violation="truncated", replacement="One."))
    assert payloads(events)[-1]["text"] == "One."


def test_an_upstream_failure_is_a_retryable_error_unless_the_brand_has_an_error_fallback() -> None:
    failure = UpstreamTimeout("stall", 15)
    (error,) = payloads(closing_events(writer("Hi"), BARE, Outcome(failure=failure)))
    assert (error["type"], error["code"], error["retryable"]) == ("error", "upstream_timeout", True)
    events = payloads(closing_events(writer("Hi"), FALLBACKS, Outcome(failure=UpstreamRateLimited("slow down"))))
    assert [(p["type"], p.get("reason")) for p in events] == [("retract", "rate_limited"), ("done", None)]


def test_a_reply_cut_by_shutdown_ends_with_a_retryable_shutting_down_error() -> None:
    (error,) = payloads(closing_events(writer("Hi"), FALLBACKS, Outcome(shutdown=True)))
    assert (error["code"], error["retryable"]) == ("shutting_down", True)
