"""What the browser tests share: Chromium's flags, the event recorder, a widget tab, the server's view."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from persona.demo import compose_answer
from testkit import T
from testkit.server import RunningServer

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = Path(__file__).parent / "pages"
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}

# Every event of the page's ChatClient, in order, in window.__bc.events (installed before any page
# script runs, so it survives reloads and sees the first state change).
RECORDER = """
window.__bc = { events: [] };
window.addEventListener("brandchat:ready", (ev) => {
  const chat = ev.detail.chat;
  for (const name of ["state", "transport", "transport_failed", "downgrade", "disconnect", "accepted",
                      "start", "delta", "retract", "done", "error", "history", "queued", "reset", "delayed"]) {
    chat.on(name, (detail) => window.__bc.events.push(Object.assign({ event: name, at: Date.now() }, detail)));
  }
});
"""


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


QUESTION = "Which beans do you roast, and how do I brew them in a French press?"  # 63 words
SLOW = {"offline_token_delay_ms": 40}  # ~2.5 s for QUESTION: long enough to cut mid-way


async def server_history(server_url: str, session: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation as the server holds it (docs/protocol.md §6)."""
    async with httpx.AsyncClient(base_url=server_url, timeout=5 * T) as http:
        response = await http.get(
            f"/v1/conversations/{session['conversation_id']}",
            headers={"Authorization": f"Bearer {session['token']}"},
        )
    response.raise_for_status()
    turns: list[dict[str, Any]] = response.json()["turns"]
    return turns


def expected_answer(server: RunningServer, question: str = QUESTION) -> str:
    """Exactly what the offline provider streams for ``question``."""
    return compose_answer(server.runtime.brands["demo"], question)


class WidgetPage:
    """One browser tab with the widget, and the ways a test reads it."""

    def __init__(self, page: Any, context: Any) -> None:
        self.page = page
        self.context = context
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def open(self, base_url: str, *, brand: str = "demo", **options: Any) -> None:
        """Load the host page from ``base_url`` with the widget open; ``options`` go to ChatClient."""
        query = {"brand": brand, "open": "true"}
        if options:
            query["options"] = json.dumps(options)
        await self.page.goto(f"{base_url}/static/host.html?{urlencode(query)}")
        await self.page.wait_for_selector(".panel:not([hidden])")

    async def events(self, name: str | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = await self.page.evaluate("window.__bc.events")
        return [e for e in events if name is None or e["event"] == name]

    async def wait_for_event(self, name: str, where: str = "true", timeout: float = 15) -> dict[str, Any]:
        """The first recorded event ``name`` for which the JS expression ``where`` (over ``e``) holds."""
        find = f"window.__bc.events.find((e) => e.event === {json.dumps(name)} && ({where}))"
        await self.page.wait_for_function(f"() => !!({find})", timeout=timeout * 1000 * T)
        found: dict[str, Any] = await self.page.evaluate(f"() => {find}")
        return found

    async def ask(self, text: str) -> None:
        box = self.page.locator("textarea")
        await box.fill(text)
        await box.press("Enter")

    async def wait_for_words(self, count: int, timeout: float = 10) -> str:
        """Wait until the newest reply bubble shows at least ``count`` words; returns its text."""
        await self.page.wait_for_function(
            """(count) => {
              const bots = [...document.querySelector("#brandchat-widget").shadowRoot
                .querySelectorAll(".msg.bot:not(.intro) .text")];
              const last = bots[bots.length - 1];
              return !!last && last.textContent.trim().split(/\\s+/).length >= count;
            }""",
            arg=count,
            timeout=timeout * 1000 * T,
        )
        return (await self.replies())[-1]

    async def replies(self) -> list[str]:
        """The text of every assistant bubble (not the intro), as shown."""
        texts: list[str] = await self.page.locator(".msg.bot:not(.intro) .text").all_text_contents()
        return texts

    async def user_messages(self) -> list[str]:
        texts: list[str] = await self.page.locator(".msg.user .text").all_text_contents()
        return texts

    async def session(self) -> dict[str, Any]:
        """The client's conversation id and token (what sessionStorage holds)."""
        session: dict[str, Any] = await self.page.evaluate("window.BrandChatWidget.chat.session")
        return session
