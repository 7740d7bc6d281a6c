"""A fake OpenAI-compatible HTTP server for tests, able to misbehave at the socket level.

It is written directly on :func:`asyncio.start_server` and speaks HTTP/1.1 by hand, so that a
test can make the "model provider" stall, drip slowly, drop the connection, reset it, send
garbage or send errors exactly where it wants, and then check what the code under test did.

Its parts: :mod:`~testkit.fake_openai.behaviours` (what to do with a request: :class:`Reply`,
:class:`StallAfter`, :class:`Status` ...), :mod:`~testkit.fake_openai.wire` (HTTP/1.1 on the
socket) and :mod:`~testkit.fake_openai.server` (:class:`FakeOpenAI`: routes, queue, recording).

Usage::

    async with FakeOpenAI() as fake:
        fake.enqueue(StallAfter(chunks=3), Reply(text="second try works"))
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=0)
        ...
        await fake.wait_for_requests(2)
        assert fake.requests[0].json["stream"] is True

Routes (all under ``/v1``):

* ``POST /v1/chat/completions`` -- pops the next queued :data:`Scenario` (FIFO), or uses the
  server's ``default`` scenario when the queue is empty.  ``"stream": true`` in the JSON body
  selects an SSE answer (``Transfer-Encoding: chunked``, ``Content-Type: text/event-stream``);
  otherwise a ``chat.completion`` JSON body is sent.
* ``GET /v1/models`` -- a model list with the single model ``"fake-model"`` (readiness checks).
* anything else -- ``404`` with an OpenAI-style error body.

Every response carries ``Connection: close``: one request per TCP connection, which keeps
:attr:`FakeOpenAI.open_connections` easy to reason about (one open socket == one request that
is still in flight on the client side). ``FakeOpenAI(keep_alive=True)`` instead keeps a connection
open after a complete ``Reply`` or ``Status`` and serves the next request on it (then an open socket
may also be an idle pooled one); :attr:`FakeOpenAI.connections_accepted` counts connections.

Every request is recorded in :attr:`FakeOpenAI.requests` as soon as its body has been read, i.e.
before the scenario starts, so ``wait_for_requests`` also works for stalled requests.

Fault scenarios are written for streaming requests.  When one is used for a non-streaming
request it is applied to the JSON body instead (see each class).
"""

from __future__ import annotations

from testkit.fake_openai.behaviours import (
    DEFAULT_TEXT,
    ByContent,
    CloseWithoutDone,
    InStreamError,
    MalformedChunk,
    Reply,
    Reset,
    Scenario,
    StallAfter,
    StallBeforeHeaders,
    Status,
    split_words,
)
from testkit.fake_openai.server import FAKE_MODEL, FakeOpenAI, RecordedRequest

__all__ = [
    "DEFAULT_TEXT",
    "FAKE_MODEL",
    "ByContent",
    "CloseWithoutDone",
    "FakeOpenAI",
    "InStreamError",
    "MalformedChunk",
    "RecordedRequest",
    "Reply",
    "Reset",
    "Scenario",
    "StallAfter",
    "StallBeforeHeaders",
    "Status",
    "split_words",
]
