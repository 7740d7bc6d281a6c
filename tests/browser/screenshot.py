"""Take the README's picture of the widget: ``python -m tests.browser.screenshot [--mobile PATH]``.

Starts a real server (offline demo provider) and headless Chromium, opens the demo page, has one
finished turn and a second reply caught mid-stream, and writes ``docs/widget.png`` (1280x800).
With ``--mobile PATH`` it also writes the same moment at phone size (390x844), for checking.
Not a test: it writes into docs/.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from api.settings import PROJECT_ROOT
from testkit.server import start_server
from tests.browser.helpers import CHROMIUM_ARGS, DESKTOP, MOBILE, RECORDER, WidgetPage, chromium_path

FIRST = "How fast do you ship?"
SECOND = "Which beans do you roast, and how do I brew them in a French press?"


async def shoot(out: Path, mobile: Path | None) -> None:
    from playwright.async_api import async_playwright

    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    server = await start_server(offline_token_delay_ms=60)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            for path, viewport in ((out, DESKTOP), (mobile, MOBILE)):
                if path is None:
                    continue
                context = await browser.new_context(viewport=viewport, device_scale_factor=1)
                await context.add_init_script(RECORDER)
                page = await context.new_page()
                widget = WidgetPage(page, context)
                await page.goto(server.base_url + "/")
                await page.wait_for_selector(".launcher[aria-label^='Open chat with']")
                await page.locator(".launcher").click()
                await widget.ask(FIRST)
                await widget.wait_for_event("done")
                await widget.ask(SECOND)
                await page.wait_for_function(
                    """() => {
                      const bots = document.querySelector("#brandchat-widget").shadowRoot
                        .querySelectorAll(".msg.bot:not(.intro) .text");
                      return bots.length === 2 && bots[1].textContent.split(/\\s+/).length >= 22;
                    }"""
                )
                await page.locator("textarea").blur()
                await page.screenshot(path=str(path))
                print(f"wrote {path}")
                await context.close()
            await browser.close()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "widget.png")
    parser.add_argument("--mobile", type=Path, default=None, help="also write a phone-sized shot here")
    args = parser.parse_args()
    asyncio.run(shoot(args.out, args.mobile))


if __name__ == "__main__":
    main()
