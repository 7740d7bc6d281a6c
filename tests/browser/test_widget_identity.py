"""The widget's ``identify`` and locale in real headless Chromium against the real server (issue 13
part 2): a signed-in user queued before the widget loads is verified and bound to the conversation,
a wrong hash is a visible error (never an anonymous chat), and data-locale picks the widget's words."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from api.identity import user_hash
from testkit import T
from testkit.server import ServerFactory
from tests.browser.helpers import DESKTOP, RECORDER, WidgetPage, expected_answer, server_history

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the module shares one browser

SECRET = "demo-identity-secret-of-the-browser-tests-0123456789"
IDENTITY = {"identity_secrets": f"demo={SECRET}"}
QUESTION = "How long does shipping take?"


def stub(*calls: str) -> str:
    """The page's one-line stub, listeners for every widget event, then ``calls`` (JS statements)."""
    return (
        "window.brandchat = window.brandchat || function () {"
        " (window.brandchat.q = window.brandchat.q || []).push(arguments); };\n"
        "window.__api = [];\n"
        'for (const name of ["open", "close", "message", "state", "identified", "error"]) {\n'
        "  brandchat('on', name, (d) => window.__api.push(Object.assign({ event: name }, d)));\n"
        "}\n" + "\n".join(calls)
    )


def identify_call(user_id: str, *, secret: str = SECRET, **extra: str) -> str:
    identity = {"user_id": user_id, "user_hash": user_hash(secret, user_id), **extra}
    return f"brandchat('identify', {json.dumps(identity)});"


async def api_events(widget: WidgetPage, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await widget.page.evaluate("window.__api")
    return [e for e in events if e["event"] == name]


async def wait_api(widget: WidgetPage, name: str, where: str = "true") -> dict[str, Any]:
    find = f"window.__api.find((e) => e.event === {json.dumps(name)} && ({where}))"
    await widget.page.wait_for_function(f"() => !!({find})", timeout=15_000 * T)
    found: dict[str, Any] = await widget.page.evaluate(f"() => {find}")
    return found


async def test_identify_queued_before_the_widget_loads_binds_the_verified_user_to_the_conversation(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **IDENTITY)
    await widget.page.add_init_script(stub(identify_call("ann-42", name="Ann", email="ann@example.com")))
    await widget.open(server.base_url)
    identified = await wait_api(widget, "identified")
    assert (identified["id"], identified["name"]) == ("ann-42", "Ann")
    await widget.ask(QUESTION)
    done = await widget.wait_for_event("done")
    assert done["text"] == expected_answer(server, QUESTION)

    session = await widget.session()
    history = await server_history(server.base_url, session)
    assert [t["role"] for t in history] == ["user", "assistant"]
    async with _http(server.base_url) as http:
        full = (await http.get(f"/v1/conversations/{session['conversation_id']}", headers=_bearer(session))).json()
    assert full["user"] == {"id": "ann-42", "name": "Ann"}  # the server's word, from the signed token
    assert await widget.page.evaluate("window.BrandChatWidget.chat.user") == {"id": "ann-42", "name": "Ann"}
    assert not await api_events(widget, "error")


async def test_identify_after_the_chat_started_binds_it_and_another_user_gets_a_new_conversation(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **IDENTITY)
    await widget.page.add_init_script(stub())
    await widget.open(server.base_url)
    await widget.ask(QUESTION)
    await widget.wait_for_event("done")
    anonymous = await widget.session()

    await widget.page.evaluate(identify_call("ann-42"))
    await wait_api(widget, "identified", "e.id === 'ann-42'")
    ann = await widget.session()
    assert ann["conversation_id"] == anonymous["conversation_id"]  # the same conversation, now Ann's
    async with _http(server.base_url) as http:
        bound = (await http.get(f"/v1/conversations/{ann['conversation_id']}", headers=_bearer(ann))).json()
        assert bound["user"] == {"id": "ann-42"} and len(bound["turns"]) == 2

        # Bob signs in on the same tab: he never gets Ann's conversation.
        await widget.page.evaluate(identify_call("bob-7"))
        await wait_api(widget, "identified", "e.id === 'bob-7'")
        await widget.wait_for_event("reset", "e.reason === 'identity'")
        bob = await widget.session()
        assert bob["conversation_id"] != ann["conversation_id"]
        his = (await http.get(f"/v1/conversations/{bob['conversation_id']}", headers=_bearer(bob))).json()
        assert his["user"] == {"id": "bob-7"} and his["turns"] == []
        # And Ann's conversation cannot be continued as Bob with her token, on the wire either.
        taken = await http.post(
            "/v1/negotiate",
            json={
                "brand": "demo",
                "conversation_id": ann["conversation_id"],
                "token": ann["token"],
                "user": {"id": "bob-7", "hash": user_hash(SECRET, "bob-7")},
            },
        )
        assert taken.status_code == 403
    assert await widget.user_messages() == []  # Ann's messages are gone from the panel
    assert await widget.page.locator(".msg.intro").count() == 1


async def test_a_wrong_user_hash_is_an_error_event_a_console_error_and_no_chat(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir, **IDENTITY)
    console: list[str] = []
    widget.page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    forged = identify_call("ann-42", secret="not-the-brands-secret-0123456789abcdef")
    await widget.page.add_init_script(stub(forged))
    await widget.open(server.base_url)
    error = await wait_api(widget, "error")
    assert error["code"] == "identity_invalid" and "does not match" in error["message"]
    notice = widget.page.locator(".notice").first
    await notice.wait_for()
    assert "could not confirm who you are" in (await notice.text_content() or "")
    assert any("identity_invalid" in line for line in console), console
    assert not await widget.events("transport"), "nothing connected anonymously"
    assert not await api_events(widget, "identified")


async def test_data_locale_picks_the_widgets_words_and_update_switches_them(
    servers: ServerFactory, static_dir: Any, widget: WidgetPage
) -> None:
    server = await servers(static_dir=static_dir)
    page = widget.page
    await page.goto(f"{server.base_url}/static/host.html?brand=demo&open=true&locale=es")
    await page.wait_for_selector(".panel:not([hidden])")
    await page.wait_for_selector(".bc[data-state='connected']")
    assert await page.locator("textarea").get_attribute("placeholder") == "Escribe a Juniper…"
    assert await page.locator(".send").get_attribute("aria-label") == "Enviar mensaje"
    assert await page.locator(".status-text").text_content() == "En línea"
    assert await page.locator(".launcher").get_attribute("aria-label") == "Cerrar el chat"
    assert (
        await page.locator(".intro .text").text_content()
        == "Hola, soy Juniper de Ember & Oak Coffee Roasters. ¿En qué puedo ayudarte?"
    )
    assert await page.locator(".demo-note").text_content() == (
        "Demo sin conexión: las respuestas salen de las preguntas frecuentes de la marca, no de una IA"
    )
    session = await widget.session()
    async with _http(server.base_url) as http:
        kept = (await http.get(f"/v1/conversations/{session['conversation_id']}", headers=_bearer(session))).json()
        assert kept["locale"] == "es"  # the hint is kept on the conversation (the token's `l`)

        await page.evaluate("brandchat('update', { locale: 'fr-CA' })")
        assert await page.locator(".status-text").text_content() == "En ligne"
        assert await page.locator("textarea").get_attribute("placeholder") == "Écrire à Juniper…"
        await page.locator(".close").click()
        assert await page.locator(".launcher").get_attribute("aria-label") == "Ouvrir le chat avec Juniper"
        await page.wait_for_function(
            "(token) => window.BrandChatWidget.chat.session.token !== token", arg=session["token"]
        )
        session = await widget.session()
        moved = (await http.get(f"/v1/conversations/{session['conversation_id']}", headers=_bearer(session))).json()
    assert moved["locale"] == "fr-CA"


async def test_without_data_locale_the_browsers_language_is_used_and_an_unknown_one_is_english(
    servers: ServerFactory, static_dir: Any, browser: Any
) -> None:
    server = await servers(static_dir=static_dir)
    for language, status in (("de-DE", "Online"), ("ja-JP", "Online")):
        context = await browser.new_context(viewport=DESKTOP, locale=language)
        try:
            await context.add_init_script(RECORDER)
            page = await context.new_page()
            await page.goto(f"{server.base_url}/static/host.html?brand=demo&open=true")
            await page.wait_for_selector(".bc[data-state='connected']")
            placeholder = await page.locator("textarea").get_attribute("placeholder")
            expected = "Nachricht an Juniper…" if language == "de-DE" else "Message Juniper…"
            assert placeholder == expected, language
            assert await page.locator(".status-text").text_content() == status
            assert await page.locator(".send").get_attribute("aria-label") == (
                "Nachricht senden" if language == "de-DE" else "Send message"
            )
        finally:
            await context.close()


def _bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['token']}"}


def _http(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=5 * T)
