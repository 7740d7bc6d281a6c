"""Real headless Chromium (Debian's ``chromium`` package) driven by Playwright's async API.

Playwright runs on the test's own event loop, so the in-process uvicorn servers and the TCP proxy
share it. Never ``playwright install`` (it downloads a browser build, which cannot work here): the
browser is ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it).

Missing chromium or playwright: the browser tests FAIL under CI (``CI=true``) and are skipped,
with the reason, on a developer machine.

The browser is shared by the tests of a module, so those tests and their async fixtures run on the
module's event loop (``pytestmark = pytest.mark.asyncio(loop_scope="module")`` in each module).

Pages are served for real by the test server (``static_dir`` = a copy of ``static/`` plus the
host page in ``pages/``): a page the test fulfils itself (``page.route``) has no network address,
and Chromium's Local Network Access checks then block its WebSocket to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from api.settings import PROJECT_ROOT
from testkit import T
from testkit.server import ServerFactory, server_pool
from tests.browser.helpers import CHROMIUM_ARGS, DESKTOP, PAGES, RECORDER, WidgetPage, chromium_path


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — browser tests must run in CI", pytrace=False)
    pytest.skip(reason)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium per test module (starting it costs ~2 s); each test gets a fresh context."""
    executable = chromium_path()
    if executable is None:
        _missing("chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]'; never `playwright install`)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000 * T)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    """What the test servers serve under /static: the shipped files plus the test host page."""
    directory = tmp_path / "static"
    shutil.copytree(PROJECT_ROOT / "static", directory)
    for page in PAGES.iterdir():
        shutil.copy(page, directory / page.name)
    return directory


@pytest_asyncio.fixture(loop_scope="module")
async def servers() -> AsyncIterator[ServerFactory]:
    """``tests/conftest.py``'s factory, on the module's loop (the loop the browser lives on)."""
    async with server_pool() as factory:
        yield factory


@pytest_asyncio.fixture(loop_scope="module")
async def widget(browser: Any) -> AsyncIterator[WidgetPage]:
    context = await browser.new_context(viewport=DESKTOP)
    await context.add_init_script(RECORDER)
    page = await context.new_page()
    page.set_default_timeout(15_000 * T)
    wp = WidgetPage(page, context)
    try:
        yield wp
    finally:
        await context.close()
    assert not wp.errors, f"uncaught errors in the page: {wp.errors}"
