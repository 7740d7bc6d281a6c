"""The widget in real headless Chromium against the real server: a whole turn, keyboard, stop, mobile."""

from __future__ import annotations

from typing import Any

import pytest

from testkit.server import ServerFactory
from tests.browser.helpers import MOBILE, QUESTION, SLOW, WidgetPage, expected_answer, server_history

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the module shares one browser


DEMO_NOTE = "Offline demo — answers come from the brand's FAQ, not an AI model"


async def test_a_full_chat_turn_on_the_demo_page_shows_exactly_the_servers_done_text(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **SLOW)
    page = widget.page
    await page.goto(server.base_url + "/")  # the demo page `make run` serves
    launcher = page.locator(".launcher")
    await page.wait_for_selector(".launcher[aria-label='Open chat with Juniper']")
    await launcher.click()
    assert await launcher.get_attribute("aria-expanded") == "true"
    await widget.ask(QUESTION)
    done = await widget.wait_for_event("done")

    assert await widget.user_messages() == [QUESTION]
    assert await widget.replies() == [done["text"]]
    assert done["text"] == expected_answer(server)
    turns = await server_history(server.base_url, await widget.session())
    assert [(t["role"], t["text"]) for t in turns] == [("user", QUESTION), ("assistant", done["text"])]
    # It streamed: many deltas, each emitted once, adding up to the final text.
    deltas = await widget.events("delta")
    assert len(deltas) > 10
    assert "".join(d["delta"] for d in deltas) == done["text"]
    assert [e["name"] for e in await widget.events("transport")] == ["websocket"]
    # The brand from negotiate, and the honest note about the offline demo provider.
    assert await page.locator(".panel h2").text_content() == "Juniper"
    assert await page.locator(".brand-name").text_content() == "Ember & Oak Coffee Roasters"
    assert await page.locator(".demo-note").is_visible()
    assert await page.locator(".demo-note").text_content() == DEMO_NOTE
    assert await page.locator(".status-text").text_content() == "Online"


async def test_the_widget_works_from_the_keyboard_and_announces_itself_to_screen_readers(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir)
    page = widget.page
    await page.goto(server.base_url + "/static/host.html?brand=demo")
    await page.wait_for_selector(".launcher[aria-label='Open chat with Juniper']")
    focused_class = "() => document.querySelector('#brandchat-widget').shadowRoot.activeElement?.className"

    await page.locator(".launcher").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_selector(".panel:not([hidden])")
    assert await page.evaluate(
        "() => document.querySelector('#brandchat-widget').shadowRoot.activeElement.tagName"
    ) == ("TEXTAREA")
    await page.keyboard.type("How fast do you ship?")
    await page.keyboard.press("Enter")
    await widget.wait_for_event("done")

    await page.keyboard.press("Escape")
    await page.wait_for_selector(".panel", state="hidden")
    assert await page.evaluate(focused_class) == "launcher"
    assert await page.locator(".launcher").get_attribute("aria-expanded") == "false"

    # Landmarks and names a screen reader needs.
    log = page.locator(".log")
    assert await log.get_attribute("role") == "log"
    assert await log.get_attribute("aria-live") == "polite"
    assert await page.locator(".status").get_attribute("role") == "status"
    assert await page.locator(".panel").get_attribute("role") == "dialog"
    assert await page.locator("label[for=input]").text_content() == "Message Juniper"
    assert await page.locator(".msg.bot:not(.intro) .bubble").get_attribute("aria-busy") == "false"
    # Shadow DOM: the host page's hostile stylesheet does not reach the widget.
    for selector in ("textarea", ".msg.bot:not(.intro) .text", ".panel h2"):
        style = await page.locator(selector).evaluate(
            "(el) => { const s = getComputedStyle(el); return [s.fontFamily, s.letterSpacing]; }"
        )
        assert "Comic Sans" not in style[0] and style[1] == "normal", (selector, style)
    launcher_background = await page.locator(".launcher").evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert launcher_background == "rgb(200, 116, 44)"  # the brand's accent, not the page's lime


async def test_the_stop_button_cancels_the_reply_mid_way_and_keeps_what_was_said(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, offline_token_delay_ms=60)
    await widget.open(server.base_url)
    await widget.ask(QUESTION)
    await widget.wait_for_words(5)
    stop = widget.page.locator(".stop")
    assert await stop.is_visible()
    await stop.click()
    done = await widget.wait_for_event("done")

    assert done["finish_reason"] == "cancelled"
    assert 0 < len(done["text"]) < len(expected_answer(server))
    assert await widget.replies() == [done["text"]]
    assert await widget.page.locator(".msg.bot:not(.intro) .meta").text_content() == "Stopped"
    await widget.page.wait_for_selector(".stop", state="hidden")
    turns = await server_history(server.base_url, await widget.session())
    assert turns[-1]["text"] == done["text"]


async def test_on_a_phone_the_panel_fills_the_screen(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir)
    await widget.page.set_viewport_size(MOBILE)
    await widget.open(server.base_url)
    box = await widget.page.locator(".panel").bounding_box()
    assert box is not None
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, MOBILE["width"], MOBILE["height"])
    assert not await widget.page.locator(".launcher").is_visible()  # it would cover the composer
    assert await widget.page.locator("textarea").is_visible()


# --- limits (issue 11): a refused send is shown, kept and sent again ---------------------------------------


async def test_a_message_typed_while_a_reply_streams_waits_for_it_then_is_sent_and_answered(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **SLOW)
    await widget.open(server.base_url)
    await widget.ask(QUESTION)
    await widget.wait_for_words(3)
    await widget.ask("Do you ship abroad?")
    delayed = await widget.wait_for_event("delayed")
    assert delayed["code"] == "conversation_busy"
    waiting = widget.page.locator(".msg.user.queued .meta")
    assert await waiting.text_content() == "Waiting for the current reply to finish…"
    await widget.wait_for_event("done", "e.client_message_id === " + repr(delayed["client_message_id"]), timeout=30)
    assert await widget.user_messages() == [QUESTION, "Do you ship abroad?"]
    assert len(await widget.events("done")) == 2
    assert not await widget.events("error")


async def test_a_rate_limited_message_says_when_it_will_be_sent_again(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, rate_replies_per_min=1)
    await widget.open(server.base_url)
    await widget.ask(QUESTION)
    await widget.wait_for_event("done")
    await widget.ask("And another question?")
    delayed = await widget.wait_for_event("delayed")
    assert delayed["code"] == "rate_limited" and delayed["retry_in_ms"] > 50_000
    meta = widget.page.locator(".msg.user.queued .meta")
    text = await meta.text_content()
    assert text is not None and text.startswith("Too many messages right now — sending again in ")
    assert not await widget.events("error"), "a limited message is delayed, not lost"


# --- the JS API ---------------------------------------------------------------------------------------

API_STUB = """
window.brandchat = window.brandchat || function () { (window.brandchat.q = window.brandchat.q || []).push(arguments); };
window.__api = [];
for (const name of ["open", "close", "message", "state"]) {
  brandchat("on", name, (detail) => window.__api.push(Object.assign({ event: name }, detail)));
}
brandchat("hideLauncher");
"""


async def api_events(widget: WidgetPage, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await widget.page.evaluate("window.__api")
    return [e for e in events if e["event"] == name]


async def test_commands_queued_before_the_widget_loads_run_and_its_events_reach_the_page(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir)
    page = widget.page
    await page.add_init_script(API_STUB)
    await page.goto(f"{server.base_url}/static/host.html?brand=demo&position=left&launcherText=Chat%20with%20us")
    await page.wait_for_function("() => !!(window.BrandChatWidget && window.BrandChatWidget.chat)")
    launcher = page.locator(".launcher")
    assert not await launcher.is_visible()  # hideLauncher, queued before the widget existed

    await page.evaluate("brandchat('open')")
    await page.wait_for_selector(".panel:not([hidden])")
    await widget.ask("How long does shipping take?")
    await page.wait_for_function("() => window.__api.some((e) => e.event === 'message' && e.role === 'assistant')")
    messages = await api_events(widget, "message")
    expected = expected_answer(server, "How long does shipping take?")
    assert [(m["role"], m["text"]) for m in messages] == [
        ("user", "How long does shipping take?"),
        ("assistant", expected),
    ]
    assert messages[1]["finish_reason"] == "stop" and messages[1]["stream_id"]
    assert "connected" in [e["newState"] for e in await api_events(widget, "state")]

    await page.evaluate("brandchat('toggle')")
    assert await page.locator(".panel").is_hidden()
    assert [e["event"] for e in await page.evaluate("window.__api") if e["event"] in ("open", "close")] == [
        "open",
        "close",
    ]
    await page.evaluate("brandchat('showLauncher')")
    assert await launcher.is_visible() and (await launcher.inner_text()).strip() == "Chat with us"
    box = await page.locator("brandchat-widget").bounding_box()
    assert box is not None and box["x"] < 100  # data-position="left"
    assert await page.evaluate("brandchat('no-such-command')") is None
    assert widget.errors == []
