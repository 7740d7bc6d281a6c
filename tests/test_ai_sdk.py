"""Issue 13's failing client: the Vercel AI SDK's *default* OpenAI provider (``openai("demo")``), which
speaks the Responses API, against a real server — ``generateText``, ``streamText`` with history, and
a ``tools`` call refused with 400. The SDK is pinned in tests/ts/package-lock.json and installed by
``make typecheck-client`` (part of ``make test``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from persona.demo import compose_answer
from testkit import T
from testkit.server import RunningServer

TS_DIR = Path(__file__).resolve().parent / "ts"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        shutil.which("node") is None or not (TS_DIR / "node_modules" / "@ai-sdk" / "openai").is_dir(),
        reason="the AI SDK is not installed: `make typecheck-client` (npm ci in tests/ts) installs it",
    ),
]

KEY = "dev-demo-key-not-secret"


async def test_the_ai_sdks_default_provider_talks_to_a_brand_through_the_responses_api(server: RunningServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        "ai_sdk_check.mjs",
        server.base_url,
        KEY,
        cwd=TS_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(40 * T):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    brand = server.runtime.brands["demo"]
    assert result["plain"]["text"] == compose_answer(brand, "How long does shipping take?")
    assert result["plain"]["finishReason"] == "stop" and result["plain"]["outputTokens"] > 0
    assert result["streamed"] == {
        "pieces": result["streamed"]["pieces"],
        "text": "You're Priya, of course! What else can I brew up for you?",
        "finishReason": "stop",
    }
    assert result["streamed"]["pieces"] > 1  # it streamed
    assert result["toolsStatus"] == 400
