"""What the fake OpenAI server does with one chat-completions request: the scripts tests queue.

Each class is one behaviour (a well-behaved reply, a stall, a truncated or reset stream, garbage,
an error event, an error status); :data:`Scenario` is any one of them. They are plain data: the
server (:mod:`testkit.fake_openai.server`) reads them and acts them out on the socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

DEFAULT_TEXT = "Hello from the fake model. It streams word by word."
"""The reply text used when a scenario is given no ``text``."""


@dataclass(frozen=True)
class Reply:
    """A normal, well-behaved reply.  Also the "slow drip" fault, with ``delay_s``.

    Streaming: headers are sent at once; then, after ``first_delay_s`` (time to first token),
    a first chunk with ``delta: {"role": "assistant", "content": ""}`` and the first content
    chunk; one ``chat.completion.chunk`` per word of ``text`` (see :func:`split_words`),
    ``delay_s`` apart; a chunk with an empty delta and ``finish_reason``; then, if the request
    had ``stream_options.include_usage`` true, a usage-only chunk (``"choices": []``); then
    ``data: [DONE]`` and the chunked terminator.

    ``include_usage``: ``None`` follows the request; ``False`` is the "missing usage chunk" fault
    (the client asked for usage but never gets it); ``True`` sends the usage chunk even when
    the client did not ask.

    Non-streaming: after ``first_delay_s`` a ``chat.completion`` with the whole text and usage.
    """

    text: str = DEFAULT_TEXT
    delay_s: float = 0.0
    first_delay_s: float = 0.0
    include_usage: bool | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class StallBeforeHeaders:
    """Read the request, then send nothing at all (not even the status line).

    The socket is held open until the client closes it or the server stops.  This is what a
    hung upstream looks like to a client: ``create()`` itself never returns.
    """


@dataclass(frozen=True)
class StallAfter:
    """Send the headers, the role chunk and the first ``chunks`` content chunks, then go silent.

    The socket is held open (no more bytes, no close) until the client closes it or the server
    stops: a stream that stops producing tokens mid-reply.

    Non-streaming: the headers and the first half of the JSON body, then silence.
    """

    chunks: int
    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class CloseWithoutDone:
    """Send ``chunks`` content chunks, then end the HTTP response cleanly and close.

    The chunked-encoding terminator is sent, so at the HTTP level the response is complete,
    but there is no ``finish_reason`` chunk, no usage chunk and no ``data: [DONE]``: a reply
    truncated by a proxy or by an upstream that gave up.

    Non-streaming: ``Content-Length`` of the whole body, but only half of it, then close.
    """

    chunks: int
    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class Reset:
    """Send ``chunks`` content chunks, then abort the TCP connection with a RST.

    ``SO_LINGER`` is set to ``(on, 0)`` and the transport is aborted, so the kernel sends a RST
    instead of a FIN and the client sees "connection reset by peer", not a clean end of stream.
    ``pause_s`` is an optional wait between the last chunk and the RST.  It is not needed on
    Linux loopback (the client still reads the chunks that arrived before the RST), but gives
    the client time to act on the chunks first if a test wants that.

    Non-streaming: half of the JSON body, then the RST.
    """

    chunks: int
    text: str = DEFAULT_TEXT
    pause_s: float = 0.0


@dataclass(frozen=True)
class MalformedChunk:
    """After ``chunks`` content chunks, write ``garbage`` raw, then go on normally to ``[DONE]``.

    The default garbage is an SSE event whose data is not JSON.  ``garbage`` is written as one
    HTTP chunk exactly as given, so it may also be a half event, a comment, etc.

    Non-streaming: ``200`` with ``garbage`` as the (``application/json``) body.
    """

    chunks: int
    text: str = DEFAULT_TEXT
    garbage: str = "data: {not json\n\n"


@dataclass(frozen=True)
class InStreamError:
    """After ``chunks`` content chunks, send an error event and end the response.

    The event is ``data: {"error": {"message": ..., "type": "server_error", "param": null,
    "code": null}}``, as OpenAI does when a stream fails after the ``200`` was sent.  No
    ``[DONE]`` follows; the response is ended cleanly and the socket closed.

    Non-streaming: a ``500`` with the same error body.
    """

    chunks: int
    message: str = "The server had an error while processing your request."
    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class Status:
    """Answer at once with HTTP ``status`` and OpenAI's error JSON body.

    The body is ``{"error": {"message", "type", "param", "code"}}`` with ``type`` set to
    ``"requests"`` (code ``"rate_limit_exceeded"``) for 429, ``"server_error"`` for 5xx and
    ``"invalid_request_error"`` for other 4xx.  With ``retry_after`` (seconds), both
    ``retry-after`` (seconds, an integer when whole) and ``retry-after-ms`` are sent.
    """

    status: int
    retry_after: float | None = None
    message: str = "The fake server answered with an error status."


@dataclass(frozen=True)
class ByContent:
    """Pick the behaviour by what the request says: the first of ``cases`` whose text occurs in the
    request's last message, else ``otherwise``. For requests that come in no fixed order (the
    sentence reviews of a reply run in parallel with it), where a FIFO queue cannot say which is which::

        ByContent((("bitcoin", Reply(text='{"ok": false, "rule": "advice"}')),), otherwise=Reply(text='{"ok": true}'))
    """

    cases: tuple[tuple[str, Scenario], ...]  # (text in the request, what to do)
    otherwise: Scenario = Reply()

    def pick(self, body: dict[str, Any] | None) -> Scenario:
        messages = (body or {}).get("messages") or [{}]
        last = messages[-1] if isinstance(messages, list) and messages else {}
        content = last.get("content") if isinstance(last, dict) else None
        said = content if isinstance(content, str) else ""
        for needle, scenario in self.cases:
            if needle in said:
                return scenario
        return self.otherwise


Scenario: TypeAlias = (
    Reply | StallBeforeHeaders | StallAfter | CloseWithoutDone | Reset | MalformedChunk | InStreamError | Status
)
"""Any one of the scenario classes above."""


def split_words(text: str) -> list[str]:
    """Split ``text`` into the content pieces streamed one chunk each.

    Each piece is a word with the whitespace that follows it (``re.findall(r"\\S+\\s*")``);
    leading whitespace is kept on the first piece, so ``"".join(split_words(t)) == t`` always.
    """
    pieces = re.findall(r"\S+\s*", text)
    lead = text[: len(text) - len(text.lstrip())]
    if lead:
        if pieces:
            pieces[0] = lead + pieces[0]
        else:
            pieces = [lead]
    return pieces
