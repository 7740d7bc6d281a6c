"""Encoded recitals: a reply that spells text out as base64 or hex (an instruction dump in disguise).

A chatbot's reply has no reason to contain a long base64 or hex run that decodes to readable text, so
:class:`EncodedScanner` treats one as a leak (``prompt_leak``): the run is held while it is written
(from its first character once it looks encoded: a digit, ``+``, ``/`` or ``=``, or a capital after
its first letter, or 16 letters without a space), decoded when it ends (and every
:data:`CHECK_EVERY` characters while it goes on), and reported when the decoded bytes are readable
text of at least :data:`MIN_WORDS` words. Ordinary words ("Yirgacheffe", "V60", "£25,000") are
released the moment they end; a random token (a tracking id) decodes to noise and is released too.
rot13 and reversed recitals need no decoding: their words are in the leak check's n-grams
(:func:`persona.checks.encoded_grams`). Cost: a few comparisons per piece; decoding only at the end of
a long run.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import re
import string

from persona.checks import Finding

MIN_RUN = 24  # shorter runs are not judged (8 words of text are ~50 base64 characters)
MIN_WORDS = 4  # decoded text with fewer words is not text
CHECK_EVERY = 64  # a run still going on is decoded again every this many characters
MAX_RUN = 8192  # a run longer than this is judged as it stands and no longer held

_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_LOOKS = re.compile(r"[0-9+/=]|.[A-Z]")
_TEXT_WORD = re.compile(r"[A-Za-z]{2,}")
_TOKEN = re.compile(r"\S+|\s+")


def decoded_text(run: str) -> str | None:
    """The readable text a base64 or hex run decodes to, or None."""
    candidates: list[bytes] = []
    if len(run) >= MIN_RUN and _HEX.fullmatch(run) and any(c.isdigit() for c in run):
        candidates.append(bytes.fromhex(run))
    if _B64.fullmatch(run):
        body = run.rstrip("=")
        body = body[: len(body) - len(body) % 4] if len(body) % 4 == 1 else body
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(base64.b64decode(body + "=" * (-len(body) % 4)))
    for raw in candidates:
        text = raw.decode("utf-8", errors="replace")
        printable = sum(1 for c in text if c.isprintable() or c in "\n\t")
        if text and printable / len(text) >= 0.95 and len(_TEXT_WORD.findall(text)) >= MIN_WORDS:
            return text
    return None


def _printable_prefix(raw: bytes) -> bool:
    """Whether ``raw`` can begin UTF-8 text (printable characters and line breaks; it may stop mid-character)."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def _could_begin_text(quad: str) -> bool:
    """Could a base64 or hex run that encodes text begin with ``quad`` (its first one to four characters)?"""
    if len(quad) < 2:
        return True
    hexed = quad[: len(quad) - len(quad) % 2]
    if all(c in string.hexdigits for c in hexed) and _printable_prefix(bytes.fromhex(hexed)):
        return True
    try:
        raw = base64.b64decode(quad + "=" * (-len(quad) % 4))
    except (binascii.Error, ValueError):
        return False
    return _printable_prefix(raw)


class EncodedScanner:
    """Holds a run that looks encoded while it is written; reports it when it decodes to text."""

    __slots__ = ("_at", "_checked", "_run")

    def __init__(self) -> None:
        self._run = ""  # the current token (no whitespace), from raw offset `_at`
        self._at = 0
        self._checked = 0  # the run's length when it was last decoded

    def feed(self, text: str, at: int) -> Finding | None:
        for m in _TOKEN.finditer(text):
            if m.group()[0].isspace():
                if self._run:
                    found = self._judge()
                    self._run, self._checked = "", 0
                    if found is not None:
                        return found
            else:
                if not self._run:
                    self._at = at + m.start()
                self._run += m.group()
        if len(self._run) - self._checked >= CHECK_EVERY and len(self._run) < MAX_RUN:
            self._checked = len(self._run)
            return self._judge(partial=True)
        return None

    def _judge(self, *, partial: bool = False) -> Finding | None:
        run = self._run.strip("\"'()[]<>.,;:!?*_`")
        if len(run) < MIN_RUN:
            return None
        if partial:
            run = run[: len(run) - len(run) % 4]
        text = decoded_text(run)
        return Finding("prompt_leak", f"encoded text: {text[:60]!r}") if text is not None else None

    def held_from(self) -> int | None:
        run = self._run
        body = run.lstrip("\"'([<*_`")
        if not body or len(run) >= MAX_RUN or not _B64.fullmatch(body):
            return None
        if not (len(run) >= 16 or _LOOKS.search(run)):
            return None
        # A first quad that no encoding of text begins with ("Ref7", "ORD7", "V60") goes out: the run
        # is held from its second quad on, which is where a recital behind such a prefix would start.
        skip = 0 if _could_begin_text(body[:4]) else 4
        at = self._at + len(run) - len(body) + skip
        return at if at < self._at + len(run) else None

    def finish(self) -> Finding | None:
        found = self._judge()
        self._run = ""
        return found
