"""One client's path through one reply while parts of the server fail under it.

A :class:`Journey` sends a message over WebSocket or SSE, keeps every stream event it receives in
order, and can drop its connection and resume from its last ``seq`` on any instance over either
transport, as the bundled client does. It treats a connection as dead when it hears nothing (not
even a ping) for twice the heartbeat (docs/protocol.md §4.3), so a frozen instance is noticed the
way a browser notices it. :meth:`Journey.follow_to_end` keeps resuming until the terminal event or a
deadline: a reply that never ends fails the test instead of hanging it.

Every wait is bounded by a deadline in the scaled unit :data:`testkit.T`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import websockets

from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text

TRANSPORTS = ("websocket", "sse")
TERMINAL = ("done", "error")


class Endpoint(Protocol):
    """Where a client connects: an :class:`~testkit.faults.InstanceProcess` or a ``RunningServer``."""

    @property
    def base_url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...


@dataclass
class Submitted:
    """The answer to one send: a stream id, or a refusal (HTTP status and error body, or the error frame)."""

    stream_id: str | None
    error: dict[str, Any] | None = None
    status: int | None = None


class Journey:
    """One client's view of one reply, across connections, instances and transports."""

    def __init__(self, negotiated: dict[str, Any], *, heartbeat_ms: int = 1000, last_event_id: bool = False) -> None:
        self.negotiated = negotiated
        self.last_event_id = last_event_id  # SSE resumes with the Last-Event-ID header, not ?after_seq
        self.token: str = negotiated["token"]
        self.silence_s = 2 * heartbeat_ms / 1000 * T
        self.stream_id: str | None = None
        self.events: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []  # seq-less error frames, SSE error events without an id
        self.connections: list[str] = []  # one line per connection: where, how, how it ended
        self.sent_at = 0.0
        self.terminal_at: float | None = None
        self._reader: asyncio.Task[None] | None = None
        self._abort: Callable[[], None] | None = None  # cuts the current WebSocket without a closing handshake

    # --- what the client has ---------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    @property
    def terminal(self) -> dict[str, Any] | None:
        return self.events[-1] if self.events and self.events[-1]["type"] in TERMINAL else None

    @property
    def seconds_to_terminal(self) -> float | None:
        return None if self.terminal_at is None else self.terminal_at - self.sent_at

    @property
    def reading(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def describe(self) -> str:
        kinds = " ".join(f"{e['seq']}:{e['type']}" for e in self.events[-12:])
        return (
            f"stream {self.stream_id}: {len(self.events)} events (last: {kinds or '-'}); "
            f"refusals: {_collapse([json.dumps(r, sort_keys=True) for r in self.refusals])}; "
            f"connections: {_collapse(self.connections)}"
        )

    # --- sending, dropping, resuming ---------------------------------------------------------------
    async def send(
        self, endpoint: Endpoint, transport: str, text: str, cmid: str = "m1", *, timeout: float = 10.0
    ) -> Submitted:
        """Send a user message and start following its stream on the same connection (WebSocket) or
        events request (SSE). A refused send is returned, not raised."""
        assert transport in TRANSPORTS, transport
        self.sent_at = time.monotonic()
        if transport == "sse":
            submitted = await submit(endpoint, self.negotiated, "sse", text, cmid, timeout=timeout)
            if submitted.stream_id is not None:
                self.stream_id = submitted.stream_id
                self.resume(endpoint, "sse")
            return submitted
        accepted: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        frame = {"type": "send", "client_message_id": cmid, "text": text}
        self._start(self._ws_reader(endpoint, frame, accepted), f"ws send @{endpoint.base_url}")
        try:
            async with asyncio.timeout(timeout * T):
                return await asyncio.shield(accepted)
        except TimeoutError:
            await self.drop()
            return Submitted(None, {"code": "test_timeout", "message": f"no answer to send within {timeout * T} s"})

    def resume(self, endpoint: Endpoint, transport: str) -> None:
        """Follow the stream from the last ``seq`` this client holds, on a new connection."""
        assert self.stream_id is not None, "nothing was sent"
        assert not self.reading, "still reading: drop() first"
        assert transport in TRANSPORTS, transport
        where = f"{'ws' if transport == 'websocket' else 'sse'} after {self.last_seq} @{endpoint.base_url}"
        if transport == "websocket":
            frame = {"type": "resume", "stream_id": self.stream_id, "after_seq": self.last_seq}
            self._start(self._ws_reader(endpoint, frame, None), where)
        else:
            self._start(self._sse_reader(endpoint), where)

    async def drop(self) -> None:
        """Cut the current connection, as a dead Wi-Fi would (the server is not told)."""
        if self._reader is not None:
            if self._abort is not None:
                self._abort()  # no closing handshake: a frozen server would hold it for close_timeout
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None

    async def wait_for_events(self, count: int, timeout: float = 10.0) -> None:
        """Until the client holds ``count`` events (or the terminal one); fails the test on timeout or
        when the connection ends before that."""
        deadline = time.monotonic() + timeout * T
        while len(self.events) < count and self.terminal is None:
            assert self.reading, f"the connection ended before {count} events: {self.describe()}"
            late = time.monotonic() >= deadline
            assert not late, f"fewer than {count} events within {timeout * T:.1f} s: {self.describe()}"
            await asyncio.sleep(0.01)

    async def wait_until_reading_ends(self, timeout: float) -> bool:
        """Until the current connection ends (terminal event, close, silence); False if it is still open."""
        if self._reader is None:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout * T):
                await asyncio.shield(self._reader)
        return self._reader.done()

    def unavailable(self) -> dict[str, Any] | None:
        """The seq-less retryable ``buffer_unavailable`` the server ended a wait with, if any."""
        for refusal in self.refusals:
            if refusal.get("code") == "buffer_unavailable" and refusal.get("retryable") is True:
                return refusal  # a WebSocket error frame, an SSE `event: error`
            error = refusal.get("error")
            if refusal.get("status") == 503 and isinstance(error, dict) and error.get("code") == "buffer_unavailable":
                return refusal  # an HTTP 503 to a resume while the buffer is down
        return None

    async def follow_to_end(
        self,
        choose: Callable[[], tuple[Endpoint, str]],
        timeout: float,
        *,
        backoff: float = 0.2,
        until_unavailable: bool = False,
    ) -> dict[str, Any]:
        """Keep following (resuming on ``choose()``'s instance and transport whenever a connection ends
        without the terminal event) until the terminal event, which is returned. Past ``timeout`` * T
        seconds from now the test fails with what the client got: a reply that hung.

        ``until_unavailable``: a seq-less retryable ``buffer_unavailable`` also ends the wait (and is
        returned): the server's answer when the buffer stays down past its deadline, since it sends
        no event that is not stored (docs/streaming.md, "Invariants")."""
        deadline = time.monotonic() + timeout * T
        while self.terminal is None:
            if until_unavailable and (told := self.unavailable()) is not None:
                await self.drop()
                return told
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self.drop()
                raise AssertionError(f"no terminal event within {timeout * T:.1f} s: {self.describe()}")
            if not self.reading:
                self._reader = None
                expired = [r for r in self.refusals if r.get("code") == "stream_expired"]
                if expired:
                    await self.drop()
                    raise AssertionError(f"the stream is gone from the buffer (stream_expired): {self.describe()}")
                endpoint, transport = choose()
                self.resume(endpoint, transport)
            seen = len(self.refusals)
            await self.wait_until_reading_ends(min(remaining / T, 1.0))
            if self.terminal is None and self.reading and any(r.get("retryable") for r in self.refusals[seen:]):
                await self.drop()  # told "not now" (e.g. buffer_unavailable): come back, as the JS client does
            if self.terminal is None and not self.reading:
                await asyncio.sleep(min(backoff * T, max(0.0, deadline - time.monotonic())))
        await self.drop()
        terminal = self.terminal
        assert terminal is not None
        return terminal

    # --- connections ------------------------------------------------------------------------------
    def _start(self, coro: Any, where: str) -> None:
        index = len(self.connections)
        self.connections.append(where)

        async def run() -> None:
            outcome = "cancelled"
            try:
                outcome = await coro
            except (websockets.ConnectionClosed, httpx.HTTPError, OSError) as exc:
                outcome = f"closed: {exc!r}"[:200]
            except TimeoutError:
                outcome = f"silent for {self.silence_s:.1f} s"
            finally:
                self.connections[index] = f"{where}: {outcome}"

        self._reader = asyncio.create_task(run())

    def _take(self, event: dict[str, Any]) -> bool:
        """Keep one stream event; True when it is the terminal one."""
        self.events.append(event)
        if event["type"] in TERMINAL:
            self.terminal_at = time.monotonic()
            return True
        return False

    async def _ws_reader(
        self, endpoint: Endpoint, first: dict[str, Any], accepted: asyncio.Future[Submitted] | None
    ) -> str:
        loop = asyncio.get_running_loop()
        try:
            async with WsClient.connect(endpoint.ws_url, self.token) as ws:
                self._abort = ws.ws.transport.abort
                await ws.send(first)
                async with asyncio.timeout(self.silence_s) as silence:
                    async for raw in ws.ws:
                        silence.reschedule(loop.time() + self.silence_s)
                        frame: dict[str, Any] = json.loads(raw)
                        kind = frame.get("type")
                        if kind == "accepted" and accepted is not None and not accepted.done():
                            self.stream_id = frame["stream_id"]
                            accepted.set_result(Submitted(frame["stream_id"]))
                        elif kind == "ended":
                            return f"ended (last_seq {frame.get('last_seq')})"
                        elif "seq" in frame and frame.get("stream_id") == self.stream_id:
                            if self._take(frame):
                                return "terminal"
                        elif kind == "error":
                            self.refusals.append(frame)
                            if accepted is not None and not accepted.done():
                                accepted.set_result(Submitted(None, frame))
                                return "send refused"
                    closed = ws.ws.close_code
                    return f"closed by the server ({closed})"
        finally:
            self._abort = None
            if accepted is not None and not accepted.done():
                accepted.set_result(Submitted(None, {"code": "connection_lost", "message": "before accepted"}))

    async def _sse_reader(self, endpoint: Endpoint) -> str:
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {self.token}"}
        params = {}
        if self.last_event_id and self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        else:
            params["after_seq"] = self.last_seq
        url = f"/v1/streams/{self.stream_id}/events"
        async with (
            httpx.AsyncClient(base_url=endpoint.base_url, timeout=None, verify=False) as http,
            asyncio.timeout(self.silence_s) as silence,
            http.stream("GET", url, headers=headers, params=params) as response,
        ):
            if response.status_code != 200:
                body = await response.aread()
                with contextlib.suppress(ValueError):
                    self.refusals.append({"status": response.status_code, **json.loads(body)})
                return f"HTTP {response.status_code}"
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                silence.reschedule(loop.time() + self.silence_s)
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
                    continue
                if "data" in fields:
                    data: dict[str, Any] = json.loads(fields["data"])
                    if "seq" in data:
                        if self._take(data):
                            return "terminal"
                    else:
                        self.refusals.append(data)
                fields = {}
            return "ended by the server"


def _collapse(lines: Sequence[str]) -> str:
    """``lines`` with runs of the same line (a client reconnecting in a loop) written once, with a count."""
    out: list[str] = []
    previous, count = None, 0
    for line in [*lines, None]:
        if line == previous:
            count += 1
            continue
        if previous is not None:
            out.append(previous if count == 1 else f"{previous} (x{count})")
        previous, count = line, 1
    return "[" + "; ".join(out) + "]"


async def submit(
    endpoint: Endpoint, negotiated: dict[str, Any], transport: str, text: str, cmid: str, *, timeout: float = 10.0
) -> Submitted:
    """One send, and only its answer: ``accepted`` / ``202`` give the stream id; an error frame or an
    HTTP error status gives the refusal. (A resend of a used ``client_message_id`` answers the first stream.)"""
    if transport == "sse":
        async with httpx.AsyncClient(base_url=endpoint.base_url, timeout=timeout * T, verify=False) as http:
            try:
                response = await http.post(
                    f"/v1/conversations/{negotiated['conversation_id']}/messages",
                    json={"client_message_id": cmid, "text": text},
                    headers={"Authorization": f"Bearer {negotiated['token']}"},
                )
            except httpx.TimeoutException:
                return Submitted(None, {"code": "test_timeout", "message": f"no answer within {timeout * T} s"})
        try:
            body = response.json()
        except ValueError:
            body = {"raw": response.text}
        if response.status_code == 202:
            return Submitted(body["stream_id"], status=202)
        return Submitted(None, body.get("error", body), status=response.status_code)
    try:
        async with asyncio.timeout(timeout * T), WsClient.connect(endpoint.ws_url, negotiated["token"]) as ws:
            await ws.send({"type": "send", "client_message_id": cmid, "text": text})
            while True:
                frame = await ws.recv(timeout=timeout)
                if frame["type"] == "accepted":
                    return Submitted(frame["stream_id"])
                if frame["type"] == "error" and "seq" not in frame:
                    return Submitted(None, frame)
    except TimeoutError:
        return Submitted(None, {"code": "test_timeout", "message": f"no answer within {timeout * T} s"})
    except websockets.ConnectionClosed as exc:
        return Submitted(None, {"code": "connection_closed", "message": repr(exc)})


def random_choice(endpoints: Callable[[], Sequence[Endpoint]], rng: Any) -> Callable[[], tuple[Endpoint, str]]:
    """A ``choose`` for :meth:`Journey.follow_to_end`: a random live endpoint, a random transport."""

    def choose() -> tuple[Endpoint, str]:
        return rng.choice(list(endpoints())), rng.choice(TRANSPORTS)

    return choose


# --- checks --------------------------------------------------------------------------------------------
def assert_whole_reply(events: list[dict[str, Any]], expected: str) -> None:
    """Well-formed (every seq once, in order, one terminal at the end), ending in ``done`` whose text is
    what the deltas and retracts fold to, and that is ``expected``."""
    assert_well_formed(events)
    done = events[-1]
    assert done["type"] == "done", f"the reply ended with {done}"
    assert done["text"] == joined_text(events), "done.text is not what the client assembled"
    assert done["text"] == expected, f"the reply's text differs from the provider's:\n{done['text']!r}\n{expected!r}"
    for retract in (e for e in events if e["type"] == "retract"):
        assert retract.get("reason") == "failover", f"an unexpected retract: {retract}"


def assert_whole_or_buffer_unavailable(events: list[dict[str, Any]], expected: str) -> None:
    """Either the whole reply, or a well-formed stream that ends in a retryable ``buffer_unavailable``."""
    assert_well_formed(events)
    if events[-1]["type"] == "done":
        assert_whole_reply(events, expected)
        return
    error = events[-1]
    assert error["code"] == "buffer_unavailable" and error["retryable"] is True, f"the reply ended with {error}"


def decode_redis_stream(entries: list[tuple[Any, dict[Any, Any]]]) -> list[dict[str, Any]]:
    """``XRANGE bc:s:{stream_id} - +`` (entry id ``{seq}-0``, fields ``t`` and ``d``) as events; the entry
    id is checked against the event's own ``seq``."""
    events = []
    for entry_id, fields in entries:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        raw = fields.get(b"d", fields.get("d"))
        assert raw is not None, f"entry {eid} has no d field: {fields}"
        event: dict[str, Any] = json.loads(raw)
        assert eid == f"{event['seq']}-0", f"entry {eid} holds seq {event['seq']}"
        events.append(event)
    return events


@dataclass
class Figures:
    """What a randomized run measured: per trial, whether anything was lost, duplicated or hung."""

    trials: int = 0
    lost_words: int = 0
    duplicated: int = 0  # events received twice + words in the text that should not be there
    hung: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # terminal error codes (retryable outcomes)
    faults: Counter[str] = field(default_factory=Counter)
    to_terminal_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def record(self, journey: Journey, expected: str, faults: Sequence[str], hung: bool) -> None:
        self.trials += 1
        self.faults.update(faults)
        seqs = [e["seq"] for e in journey.events]
        self.duplicated += len(seqs) - len(set(seqs))
        got, want = Counter(joined_text(journey.events).split()), Counter(expected.split())
        terminal = journey.terminal
        if hung:
            self.hung += 1
        elif terminal is not None and terminal["type"] == "error":
            self.errors[str(terminal.get("code"))] += 1  # not a loss: the client is told to retry
        else:
            self.lost_words += sum((want - got).values())
        self.duplicated += sum((got - want).values())
        if journey.seconds_to_terminal is not None:
            self.to_terminal_s.append(journey.seconds_to_terminal)

    def percentile(self, q: float) -> float:
        if not self.to_terminal_s:
            return float("nan")
        ordered = sorted(self.to_terminal_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def summary(self) -> str:
        return (
            f"trials {self.trials}, lost {self.lost_words} words, duplicated {self.duplicated}, hung {self.hung}, "
            f"time to terminal p50 {self.percentile(0.5):.2f} s / p99 {self.percentile(0.99):.2f} s; "
            f"terminal errors {dict(self.errors)}; faults {dict(self.faults)}"
        )
