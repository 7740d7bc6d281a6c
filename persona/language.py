"""The reply's language: the user's when the brand speaks it, else the brand's first.

**Detector.** `lingua-language-detector` (its n-gram models ship inside the wheel; nothing is
downloaded), restricted to :data:`LANGUAGES`, high accuracy mode. Measured on this machine (2 cores
shared with other work): built in 2-5.6 s, +200-250 MB of memory; the low accuracy mode (trigrams
only) builds in ~0.25 s for ~25 MB but took a third of short English questions ("Tell me a joke.",
"When is the telephone line open?") for Italian or German with high confidence, while the high
accuracy mode got none of the labelled set's 306 questions wrong (docs/prompting.md). It is built
once per process, on first use, under a lock (:func:`detector`). Lingua holds the GIL while it
builds, so a thread would not keep the event loop free: the server calls :func:`warm_up` in
``Runtime.build``, before it serves.

**Expected language** (:func:`expected`): the user's message when it has ``user_min_words`` words and
the detector is sure enough (``user_min_confidence``); else the earlier user turns together; else the
client's locale hint (``GuardContext.locale``, e.g. ``es-MX``). When that language is one of the
brand's ``languages`` (a brand that declares none speaks all) the reply must be in it; another known
language → the brand's first; nothing known ("ok", "hola") → any of the brand's languages.

**Judging a reply** (:class:`LanguageGate`): once the reply has ``min_words`` *language words*
(:func:`language_words`: names and figures left out) and a sentence ended (or twice as many words),
the detector's confidence values are read, renormalised over every language but the close relatives
of an expected one that nobody in the conversation speaks (:func:`judge`): the reply passes when its
most likely language is an expected one; it is in the wrong language when the expected languages
together have at most ``1 - min_confidence`` (0.1 by default); in between it is judged again with
more text, and still unsure at ``max_words`` it passes. A reply with fewer than ``min_words``
language words is never judged ("OK", "Visa and Apple Pay."). Judging costs ~0.1-0.5 ms, a few times
per reply; per token the gate counts spaces until it has judged, then nothing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, get_args

from persona.brand import Brand, LanguageCode

if TYPE_CHECKING:
    from lingua import LanguageDetector

#: The languages the detector tells apart (= the codes a brand may declare).
LANGUAGES: Final[tuple[str, ...]] = get_args(LanguageCode)
_SENTENCE_END = frozenset(".!?…\n")

_lock = threading.Lock()
_detector: LanguageDetector | None = None


def detector() -> LanguageDetector:
    """The process's detector, built on first use (thread-safe; 2-5 s once, see :func:`warm_up`)."""
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

                languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in LANGUAGES]
                # High accuracy (1- to 5-grams): the low accuracy mode (trigrams, ~0.25 s and ~25 MB)
                # took a third of short English questions for German, French or Dutch (docs/prompting.md).
                _detector = LanguageDetectorBuilder.from_languages(*languages).with_preloaded_language_models().build()
    return _detector


def warm_up() -> None:
    """Build the detector now (at start-up, before the event loop serves), not in the first reply."""
    detector()


def confidences(text: str) -> dict[str, float]:
    """Each language's confidence (0-1, summing to 1 when any) that ``text`` is written in it."""
    return {
        value.language.iso_code_639_1.name.lower(): value.value
        for value in detector().compute_language_confidence_values(text)
    }


# A word (letters, inner apostrophes and hyphens), or what ends a sentence or a clause before a list.
_TOKEN = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*|[.!?…:\n]")


def language_words(text: str) -> list[str]:
    """The words that say what language ``text`` is in: figures, units with figures and names are left
    out. A name is a capitalised word inside a sentence ("Colombian Huila", "Apple Pay", "Visa"):
    product and company names are the words most often borrowed across languages. (German capitalises
    every noun; its other words are plenty.)"""
    kept: list[str] = []
    initial = True
    for match in _TOKEN.finditer(text):
        token = match.group()
        if not token[0].isalpha():
            initial = True
            continue
        before = match.start() - 1
        while before >= 0 and text[before] == " ":
            before -= 1
        if before >= 0 and text[before].isdigit():
            pass  # a unit after a figure: "250 g", "15ml"
        elif initial or not token[0].isupper() or token == "I":
            kept.append(token)
        initial = False
    return kept


def detect(text: str, min_words: int, min_confidence: float) -> str | None:
    """The language of ``text`` when it has ``min_words`` words and the detector is that sure, else None."""
    kept = language_words(text)
    if len(kept) < min_words:
        return None
    values = confidences(" ".join(kept))
    if not values:
        return None
    language, confidence = max(values.items(), key=lambda item: item[1])
    return language if confidence >= min_confidence else None


def locale_language(locale: str | None) -> str | None:
    """``es-MX`` / ``pt_BR`` / ``de`` → the language code, when the detector knows it."""
    if not locale:
        return None
    code = locale.replace("_", "-").split("-", 1)[0].strip().lower()
    return code if code in LANGUAGES else None


@dataclass(frozen=True)
class Expected:
    """What language a reply must be in: ``allowed`` codes; ``user`` is the user's, when known;
    ``among`` the languages a reply is judged among (the brand's and the user's)."""

    allowed: frozenset[str]
    user: str | None
    source: str  # message | turns | locale | none
    among: frozenset[str] = frozenset(LANGUAGES)

    @property
    def primary(self) -> str | None:
        """The language the reply should have been in (for the fallback), if one."""
        return next(iter(self.allowed)) if len(self.allowed) == 1 else None


def expected(brand: Brand, question: str, user_turns: Iterable[str] = (), locale: str | None = None) -> Expected:
    """The reply's expected language(s) for this request (see the module docstring)."""
    check = brand.guard.language
    user, source = detect(question, check.user_min_words, check.user_min_confidence), "message"
    if user is None:
        earlier = " ".join(list(user_turns)[-3:])
        user, source = detect(earlier, check.user_min_words, check.user_min_confidence), "turns"
    if user is None:
        user, source = locale_language(locale), "locale"
    declared: frozenset[str] = frozenset(brand.languages) or frozenset(LANGUAGES)  # none: the user's, whichever
    spoken = declared | ({user} if user else set())
    if user is None:
        return Expected(declared, None, "none", _among(declared, spoken))
    allowed = frozenset({user}) if user in declared else frozenset({brand.languages[0]})
    return Expected(allowed, user, source, _among(allowed, spoken))


# Languages a detector confuses on one sentence: Spanish with Portuguese and Italian, German with Dutch.
_RELATIVES: Final[dict[str, frozenset[str]]] = {
    "es": frozenset({"pt", "it"}),
    "pt": frozenset({"es"}),
    "it": frozenset({"es"}),
    "de": frozenset({"nl"}),
    "nl": frozenset({"de"}),
}


def _among(allowed: frozenset[str], spoken: frozenset[str]) -> frozenset[str]:
    """The languages a reply is judged among: all, but the close relatives of an expected language that
    nobody in the conversation speaks (the brand or the user)."""
    relatives = frozenset().union(*(_RELATIVES.get(code, frozenset()) for code in allowed))
    return frozenset(LANGUAGES) - (relatives - spoken)


@dataclass(frozen=True)
class Verdict:
    """A judged reply: ``wrong`` when it is in a language it should not be in."""

    wrong: bool
    detected: str | None
    confidence: float  # the detected language's
    expected: Expected

    def fields(self, action: str) -> dict[str, Any]:
        return {
            "expected": sorted(self.expected.allowed),
            "user": self.expected.user,
            "source": self.expected.source,
            "detected": self.detected,
            "confidence": round(self.confidence, 3),
            "action": action,
        }


def judge(text: str, want: Expected, min_confidence: float) -> Verdict | None:
    """A verdict on ``text`` (its :func:`language_words`), or None while unsure (see the module docstring).

    The detector's values are renormalised over ``want.among``: every language but the close relatives
    of an expected one that nobody in the conversation speaks. That keeps relatives apart (a Spanish
    sentence the detector half takes for Portuguese is Spanish for a brand that does not speak
    Portuguese); the price is that a Portuguese reply to a Spanish speaker is judged as Spanish."""
    values = {code: value for code, value in confidences(text).items() if code in want.among}
    total = sum(values.values())
    if total <= 0.0:
        return None
    values = {code: value / total for code, value in values.items()}
    language, confidence = max(values.items(), key=lambda item: item[1])
    if language in want.allowed:
        return Verdict(False, language, confidence, want)
    if sum(values.get(code, 0.0) for code in want.allowed) <= 1.0 - min_confidence:
        return Verdict(True, language, confidence, want)
    return None


#: The least confidence :func:`reply_language` needs to name a short reply's language.
REPLY_MIN_CONFIDENCE: Final[float] = 0.6


def reply_language(text: str, min_words: int = 2) -> str | None:
    """The language a finished reply is most likely in, or None with fewer than ``min_words`` language
    words or no language at least :data:`REPLY_MIN_CONFIDENCE` likely. For the lexical off-topic check,
    whose vocabulary is in one language (``checks.vocabulary_language``): it runs once per reply, and
    only when a reply already scored off-topic."""
    return detect(text, min_words, REPLY_MIN_CONFIDENCE)


class LanguageGate:
    """One reply's language check, fed as the reply streams (one per guard).

    :meth:`step` counts words per piece and judges at the check points; :attr:`pending` is true
    until a verdict (or the benefit of the doubt), which a brand with ``hold.language: sentence``
    uses to hold the text. ``text`` returns the reply so far (the guard's, joined only when judged)."""

    __slots__ = ("_check", "_expect", "_next", "_words", "brand", "context", "pending", "verdict")

    def __init__(self, brand: Brand, question: str, user_turns: tuple[str, ...], locale: str | None) -> None:
        self.brand = brand
        self.context = (question, user_turns, locale)
        self._check = brand.guard.language
        self._expect: Expected | None = None  # computed at the first judgement (the detector is built by then)
        self._words = 0
        self._next = self._check.min_words
        self.pending = True
        self.verdict: Verdict | None = None

    def want(self) -> Expected:
        if self._expect is None:
            question, turns, locale = self.context
            self._expect = expected(self.brand, question, turns, locale)
        return self._expect

    def step(self, piece: str, text: Callable[[], str]) -> Verdict | None:
        """Take the next piece; a verdict of a wrong language when this piece decided it."""
        if not self.pending:
            return None
        self._words += piece.count(" ") + piece.count("\n")
        if self._words < self._next:
            return None
        if self._words < self._next + self._check.min_words and not _SENTENCE_END.intersection(piece):
            return None  # wait for the end of the sentence (or twice the words)
        return self._judge(text(), final=False)

    def finish(self, text: str) -> Verdict | None:
        """The reply ended: judge it if it is still pending and long enough; a wrong-language verdict."""
        if not self.pending:
            return None
        return self._judge(text, final=True)

    def _judge(self, text: str, *, final: bool) -> Verdict | None:
        kept = language_words(text)
        if len(kept) < self._check.min_words:  # mostly names and figures so far
            if final or self._words >= self._check.max_words:
                self.pending = False  # a list of names and figures: nothing to judge, and it passes
            else:
                self._next = self._words + max(1, self._check.min_words // 2)
            return None
        verdict = judge(" ".join(kept), self.want(), self._check.min_confidence)
        if verdict is None and not final and self._words < self._check.max_words:
            self._next = self._words + max(1, self._check.min_words // 2)
            return None
        self.pending = False
        self.verdict = verdict
        return verdict if verdict is not None and verdict.wrong else None
