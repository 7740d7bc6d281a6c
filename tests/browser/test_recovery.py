"""Recovery in a real browser: blocked WebSockets, cuts mid-reply, a server restart, a reload, offline.

Every reply is checked word for word against what the offline provider streams for the question
(``compose_answer``) and against ``done.text``: nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from testkit.server import ServerFactory
from tests.browser.helpers import QUESTION, SLOW, WidgetPage, expected_answer, server_history
from tests.browser.proxy import Proxy

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the module shares one browser


CONNECT_TIMEOUT_MS = 1500  # short, so the "silent WebSocket" case downgrades quickly
FAST_RETRY = {"backoffMaxMs": 1000}


async def assert_whole_reply(widget: WidgetPage, expected: str) -> dict[str, Any]:
    done = await widget.wait_for_event("done")
    assert done["text"] == expected
    assert await widget.replies() == [expected]
    deltas = await widget.events("delta")
    assert "".join(d["delta"] for d in deltas) == expected, "a word was emitted twice or never"
    return done


async def test_a_proxy_that_refuses_the_websocket_upgrade_sends_the_client_to_sse_and_the_reply_arrives_whole(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **SLOW)
    async with Proxy(server.port, "refuse_websocket") as proxy:
        await widget.open(proxy.base_url, connectTimeoutMs=CONNECT_TIMEOUT_MS)
        await widget.ask(QUESTION)
        await assert_whole_reply(widget, expected_answer(server))
        assert proxy.refused_upgrades == 1
        failed = await widget.events("transport_failed")
        assert [(f["transport"], f["reason"]) for f in failed] == [("websocket", "closed_before_welcome")]
        assert [e["name"] for e in await widget.events("transport")] == ["sse"]

        # Remembered for this browser: the next page reports it and goes straight to SSE.
        negotiations: list[dict[str, Any]] = []
        widget.page.on(
            "request",
            lambda r: negotiations.append(json.loads(r.post_data)) if r.url.endswith("/v1/negotiate") else None,
        )
        await widget.page.reload()
        await widget.wait_for_event("transport")
        assert negotiations and negotiations[0]["failed"] == ["websocket"]
        assert [e["name"] for e in await widget.events("transport")] == ["sse"]
        assert proxy.refused_upgrades == 1


async def test_a_proxy_that_takes_the_upgrade_but_passes_no_frames_sends_the_client_to_sse_after_the_connect_timeout(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **SLOW)
    async with Proxy(server.port, "blackhole_websocket") as proxy:
        await widget.open(proxy.base_url, connectTimeoutMs=CONNECT_TIMEOUT_MS)
        await widget.ask(QUESTION)
        await assert_whole_reply(widget, expected_answer(server))
        assert proxy.blackholed_upgrades == 1
        failed = await widget.events("transport_failed")
        assert [(f["transport"], f["reason"]) for f in failed] == [("websocket", "silent")]
        states = await widget.events("state")
        connected = next(s for s in states if s["newState"] == "connected")
        assert connected["at"] - states[0]["at"] >= CONNECT_TIMEOUT_MS - 50  # waited for the welcome
        assert [e["name"] for e in await widget.events("transport")] == ["sse"]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_reply_cut_mid_way_by_the_proxy_completes_with_no_lost_or_doubled_word(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage, transport: str
) -> None:
    server = await servers(static_dir=static_dir, **SLOW)
    async with Proxy(server.port) as proxy:
        await widget.open(proxy.base_url, transports=[transport], **FAST_RETRY)
        await widget.wait_for_event("transport")
        await widget.ask(QUESTION)
        partial = await widget.wait_for_words(8)
        assert await proxy.kill_all() >= 1
        done = await assert_whole_reply(widget, expected_answer(server))
    assert len(partial) < len(done["text"])
    disconnect = await widget.wait_for_event("disconnect")
    assert disconnect["at"] < done["at"], "the cut must land mid-reply"
    assert [e["name"] for e in await widget.events("transport")] == [transport, transport]


async def test_a_server_restart_mid_reply_completes_the_reply_from_redis_with_no_lost_or_doubled_word(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage, redis_url: str
) -> None:
    settings = {"static_dir": static_dir, "buffer_url": redis_url, "shutdown_grace_s": 10, **SLOW}
    first = await servers(**settings)
    await widget.open(first.base_url, **FAST_RETRY)
    await widget.wait_for_event("transport")
    await widget.ask(QUESTION)
    await widget.wait_for_words(8)
    await first.stop()  # as on SIGTERM: WebSockets closed with 1012, the reply drains into Redis
    await servers(port=first.port, **settings)
    done = await assert_whole_reply(widget, expected_answer(first))
    disconnect = await widget.wait_for_event("disconnect")
    assert disconnect["code"] == 1012
    assert disconnect["at"] < done["at"]


async def test_a_page_reload_mid_reply_redraws_the_history_and_the_reply_completes(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, offline_token_delay_ms=60)
    await widget.open(server.base_url)
    await widget.ask(QUESTION)
    await widget.wait_for_words(6)
    await widget.page.reload()
    history = await widget.wait_for_event("history")
    assert [(t["role"], t.get("status")) for t in history["turns"]] == [("user", None), ("assistant", "streaming")]
    done = await widget.wait_for_event("done")
    assert done["text"] == expected_answer(server)
    assert await widget.user_messages() == [QUESTION]
    assert await widget.replies() == [done["text"]]
    turns = await server_history(server.base_url, await widget.session())
    assert [t["role"] for t in turns] == ["user", "assistant"]


async def test_a_message_typed_while_offline_is_queued_and_sent_once_when_back_online(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **SLOW)
    await widget.open(server.base_url)
    await widget.wait_for_event("transport")
    await widget.context.set_offline(True)
    await widget.wait_for_event("state", "e.newState === 'offline'")
    await widget.ask(QUESTION)
    meta = widget.page.locator(".msg.user .meta")
    assert await meta.text_content() == "Queued — will send when you're back online"
    assert not await widget.events("accepted")

    await widget.context.set_offline(False)
    await assert_whole_reply(widget, expected_answer(server))
    await widget.page.wait_for_selector(".msg.user .meta", state="detached")
    queued = await widget.events("queued")
    accepted = await widget.events("accepted")
    assert [a["client_message_id"] for a in accepted] == [queued[0]["client_message_id"]]
    turns = await server_history(server.base_url, await widget.session())
    users = [t for t in turns if t["role"] == "user"]
    assert [(u["text"], u["client_message_id"]) for u in users] == [(QUESTION, queued[0]["client_message_id"])]
    assert [t["text"] for t in turns if t["role"] == "assistant"] == [expected_answer(server)]
    # Back on the WebSocket: an offline spell is not a reason to remember it as failed.
    assert [e["name"] for e in await widget.events("transport")] == ["websocket", "websocket"]
    assert not await widget.events("downgrade")
