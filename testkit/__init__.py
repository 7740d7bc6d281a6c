"""Real parts for tests and benchmarks: nothing here is mocked.

* :mod:`testkit.processes` -- a throw-away ``redis-server``, a free port for a child process;
* :mod:`testkit.server` -- this app on real uvicorn servers on ephemeral ports;
* :mod:`testkit.clients` -- protocol clients (negotiate, WebSocket, SSE) and checks of what they got;
* :mod:`testkit.fake_openai` -- a fake OpenAI-compatible server that can stall, drop or answer 429.

Time comes from one scaled unit, :data:`T` (seconds; ``TEST_TIME_SCALE`` stretches it on a slow
machine); every wait in the kit is bounded by a deadline built from it.
"""

from __future__ import annotations

import os

T = float(os.environ.get("TEST_TIME_SCALE", "1.0"))
"""The time unit of tests, in seconds: 1.0 unless ``TEST_TIME_SCALE`` says otherwise."""

PROPERTY_SCALE = float(os.environ.get("PROPERTY_SCALE", "0.5"))
"""How many examples the guard's property tests draw, as a share of each test's full count: half in
``make test`` (its 10-minute budget on 2 cores), twice the full count in ``make test-properties``."""


def examples(full: int) -> int:
    """A property test's ``max_examples``: ``full`` scaled by ``PROPERTY_SCALE`` (never under 20)."""
    return max(20, round(full * PROPERTY_SCALE))
