"""The guard end to end: a real server, the real ``openai`` SDK, and a fake model that says things
it should not. What clients see on the wire: ``retract`` + ``done{fallback}``, only moderated text
(live, resumed, and in history), the upstream call stopped, off-topic replies counted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from testkit import T
from testkit.clients import assert_well_formed, joined_text, negotiate, read_sse, ws_turn
from testkit.fake_openai import FakeOpenAI, Reply
from testkit.server import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(30)

RECORDED: list[tuple[str, dict[str, Any]]] = []


def recording_hook(event: str, fields: dict[str, Any]) -> None:
    RECORDED.append((event, dict(fields)))


@pytest.fixture
async def server(servers_on_fake: ServerFactory) -> RunningServer:
    RECORDED.clear()
    return await servers_on_fake(hooks=["tests.test_guard_e2e:recording_hook"])


CLEAN_START = "We roast on Mondays and Thursdays and ship within a day of roasting. "
FILLER_LATE = CLEAN_START + "As an AI language model, I cannot taste coffee, " + " ".join(["but"] * 60)


async def test_filler_mid_reply_is_retracted_for_the_fallback_and_never_reaches_the_client(
    fake: FakeOpenAI, server: RunningServer
) -> None:
    fake.enqueue(Reply(text=FILLER_LATE, delay_s=0.01 * T))
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "How long does shipping take?")
    assert_well_formed(events)
    fallback = server.runtime.brands["demo"].fallbacks.off_brand
    streamed = "".join(e["text"] for e in events if e["type"] == "delta")
    assert streamed == CLEAN_START, "the clean sentence went out, nothing of the filler"
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-2]["reason"] == "filler" and events[-2]["text"] == fallback
    assert events[-1]["finish_reason"] == "fallback" and events[-1]["text"] == fallback == joined_text(events)
    # The upstream call was stopped, not read to its end.
    await fake.wait_for_open_connections(0, timeout=2 * T)
    assert ("guard_fallback", {"stream_id": events[0]["stream_id"], "brand": "demo", "rule": "filler"}) in RECORDED

    # A client resuming anywhere (from the start, or mid-stream, over SSE) sees only moderated text.
    for after in (0, 2):
        reader = await read_sse(server.base_url, events[0]["stream_id"], n["token"], after_seq=after)
        replay = [e.data for e in reader.events]
        assert replay == events[after:]
        assert "language model" not in "".join(e.get("text", "") for e in replay)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        history = (
            await http.get(
                f"/v1/conversations/{n['conversation_id']}", headers={"Authorization": f"Bearer {n['token']}"}
            )
        ).json()
    assert history["turns"][1]["text"] == fallback, "memory keeps the moderated reply"


async def test_a_violation_in_the_first_sentence_needs_no_retract_for_a_brand_holding_sentences(
    fake: FakeOpenAI, server: RunningServer
) -> None:
    fake.enqueue(Reply(text="Honestly, Barclays cards are fine too. The Everyday Saver pays interest monthly. "))
    n = await negotiate(server.base_url, "meridian")  # guard.hold.rules: sentence
    events = await ws_turn(server.ws_url, n, "Which card?")
    fallback = server.runtime.brands["meridian"].fallbacks.off_brand
    assert [e["type"] for e in events] == ["start", "delta", "done"]
    assert events[1]["text"] == fallback
    assert events[-1]["finish_reason"] == "fallback"


async def test_a_violation_mid_sentence_retracts_only_the_words_before_it_for_a_brand_streaming_at_once(
    fake: FakeOpenAI, server: RunningServer
) -> None:
    fake.enqueue(Reply(text="Honestly, Starbucks beans are fine too. " + CLEAN_START, delay_s=0.01 * T))
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "Which beans?")
    assert_well_formed(events)
    fallback = server.runtime.brands["demo"].fallbacks.off_brand
    streamed = "".join(e["text"] for e in events if e["type"] == "delta")
    assert streamed == "Honestly, ", "the words before the name went out at once, nothing of the name"
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-2]["reason"] == "competitor" and events[-1]["text"] == fallback


async def test_an_off_topic_reply_is_replaced_for_both_brands(fake: FakeOpenAI, server: RunningServer) -> None:
    # (the demo only counted off-topic replies until the issue 12 follow-up made its check precise enough)
    lasagna = (
        "Lasagna is layered with pasta sheets, ricotta, marinara and mozzarella. Bake it slowly "
        "until the cheese bubbles and browns."
    )
    fake.enqueue(Reply(text=lasagna), Reply(text=lasagna))
    demo = await ws_turn(server.ws_url, await negotiate(server.base_url), "What should I cook tonight?")
    assert demo[-1]["finish_reason"] == "fallback"
    assert demo[-1]["text"] == server.runtime.brands["demo"].fallbacks.off_topic
    bank = await ws_turn(server.ws_url, await negotiate(server.base_url, "meridian"), "What should I cook tonight?")
    assert bank[-1]["finish_reason"] == "fallback"
    assert bank[-1]["text"] == server.runtime.brands["meridian"].fallbacks.off_topic
    assert bank[-2]["type"] == "retract" and bank[-2]["reason"] == "off_topic"
    noted = [(f["brand"], f["action"]) for event, f in RECORDED if event == "off_topic"]
    assert noted == [("demo", "fallback"), ("meridian", "fallback")]
    assert all(f["score"] < f["threshold"] for event, f in RECORDED if event == "off_topic")


async def test_a_reply_cut_by_length_ends_on_its_last_whole_sentence(fake: FakeOpenAI, server: RunningServer) -> None:
    # The bank holds unfinished sentences (guard.hold.length: sentence): the cut one never went out.
    fake.enqueue(Reply(text="We confirm payments within two hours. Transfers over the limit", finish_reason="length"))
    events = await ws_turn(server.ws_url, await negotiate(server.base_url, "meridian"), "payments?")
    assert_well_formed(events)
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["text"] == joined_text(events) == "We confirm payments within two hours. "
    assert "retract" not in [e["type"] for e in events]


async def test_a_reply_cut_by_length_retracts_the_cut_sentence_for_a_brand_streaming_at_once(
    fake: FakeOpenAI, server: RunningServer
) -> None:
    fake.enqueue(Reply(text="We roast on Mondays. Orders over $35 ship", finish_reason="length"))
    events = await ws_turn(server.ws_url, await negotiate(server.base_url), "shipping?")
    assert_well_formed(events)
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-2]["text"] == joined_text(events) == "We roast on Mondays."


@pytest.mark.parametrize("brand_id", ["demo", "meridian"])
async def test_a_reply_longer_than_the_brands_length_ends_on_its_last_allowed_sentence_and_the_model_is_stopped(
    fake: FakeOpenAI, server: RunningServer, brand_id: str
) -> None:
    brand = server.runtime.brands[brand_id]
    allowed = [f"Your payment transfer is confirmed in step {i}." for i in range(brand.length.max_sentences)]
    rambling = " ".join(allowed + ["And then part more."] + ["then"] * 200)
    fake.enqueue(Reply(text=rambling, delay_s=0.005 * T))
    events = await ws_turn(server.ws_url, await negotiate(server.base_url, brand_id), "payments and shipping?")
    assert_well_formed(events)
    assert "retract" not in [e["type"] for e in events], "nothing past the limit ever went out"
    assert events[-1]["finish_reason"] == "length"
    assert joined_text(events).rstrip() == " ".join(allowed)
    await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_the_upstream_request_carries_the_brand_prompt_facts_settings_and_conversation_memory(
    fake: FakeOpenAI, server: RunningServer
) -> None:
    fake.enqueue(Reply(text="Nice to meet you, Priya."), Reply(text="You're Priya."))
    n = await negotiate(server.base_url)
    await ws_turn(server.ws_url, n, "Hi, my name is Priya.", "m1")
    await ws_turn(server.ws_url, n, "How long does shipping take?", "m2")
    first, second = (r.json for r in fake.chat_requests)
    assert first is not None and second is not None
    assert first["temperature"] == 0.7, "the brand's model settings"
    messages = second["messages"]
    assert any(m.get("name") == "example_user" for m in messages)
    assert any(m["role"] == "system" and "[shipping]" in m["content"] for m in messages)
    assert messages[-3:] == [
        {"role": "user", "content": "Hi, my name is Priya."},
        {"role": "assistant", "content": "Nice to meet you, Priya."},
        {"role": "user", "content": "How long does shipping take?"},
    ]


ENGLISH_REPLY = "Sure thing, our coffee is roasted fresh and tastes lovely with a little warm milk. Enjoy every cup."


@pytest.mark.parametrize(("locale", "replaced"), [("es-MX", True), ("en-GB", False)])
async def test_the_pages_locale_tells_the_language_check_what_a_short_message_does_not(
    fake: FakeOpenAI, server: RunningServer, locale: str, replaced: bool
) -> None:
    """negotiate's ``locale`` (the widget's ``data-locale``) travels in the token to the guard: "ok?"
    says nothing about the user's language, so the page's locale decides what the reply must be in."""
    fake.enqueue(Reply(text=ENGLISH_REPLY))
    n = await negotiate(server.base_url, locale=locale)
    events = await ws_turn(server.ws_url, n, "ok?")
    assert_well_formed(events)
    if replaced:
        spanish = server.runtime.brands["demo"].fallbacks.language["es"]
        assert [e["type"] for e in events[-2:]] == ["retract", "done"]
        assert events[-2]["reason"] == "language" and events[-1]["text"] == spanish == joined_text(events)
    else:
        assert events[-1]["finish_reason"] == "stop" and events[-1]["text"] == ENGLISH_REPLY
