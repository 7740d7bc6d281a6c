"""A brand is data: a YAML file under ``BRANDS_DIR`` validated by :class:`Brand`.

Everything that makes a bot sound like *this* brand lives in its file: persona, voice traits and
tone-of-voice guide, do / don't rules (a don't may carry a regex the guard enforces), banned
phrases, allowed topics, length, sign-off and emoji policy, tagged few-shot examples, knowledge
snippets, fallback replies, the API key for the OpenAI-compatible endpoint (by environment
variable name, never the secret itself), allowed origins, model settings, and a version.

Loading (:mod:`persona.loader`) is all-or-nothing: a bad file raises `BrandFileError` naming the file, the field
and its line, and the server does not start. ``brands/brand.schema.json`` is generated from this
model (``python -m persona.schema``) so editors can validate brand files as they type.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

_SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"

# The languages the guard can tell apart (persona/language.py restricts its detector to these: load
# time and memory grow with each one). ISO 639-1 codes.
LanguageCode = Literal["en", "es", "fr", "de", "it", "pt", "nl"]
# The industries of the shipped gazetteer of well-known companies (persona/data/companies.yaml).
Industry = Literal["coffee", "banking", "fintech", "retail"]
# The families of generic assistant filler (persona/filler.py).
FillerFamily = Literal[
    "ai_disclaimer", "no_feelings", "hope_it_helps", "invite_more", "praise_question", "reassurance",
    "happy_to_help", "worth_noting", "in_conclusion", "cliche",
]  # fmt: skip
# The families of off-brand replies beyond filler (persona/families.py), by the rule they fire.
ToneFamily = Literal["slang", "chummy", "contractions", "legalese", "corporate", "bureaucratic", "condescending"]
PromiseFamily = Literal[
    "guarantee",
    "invented_offer",
    "account_action",
    "asks_for_secrets",
    "financial_advice",
    "tax_legal_advice",
    "health_advice",
]
MetaFamily = Literal["instructions", "configuration", "translated_instructions", "persona_summary"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Voice(_Strict):
    traits: list[str] = Field(min_length=1, description="Adjectives for the voice, most important first.")
    guide: str = Field(
        default="", description="The tone-of-voice guide in prose, as a copywriter would brief a new hire."
    )
    formality: Literal["casual", "formal", "neutral"] = Field(
        default="neutral",
        description="The brand's register; the guard replaces a reply in the opposite one (persona/families.py). "
        "formal: slang and chummy words are off-brand; casual: legalese and stiff corporate phrases are; "
        "neutral: neither.",
    )
    contractions: bool = Field(
        default=True,
        description="false: contractions (don't, we're, it's …) are off-brand, enforced by the guard.",
    )


class DontRule(_Strict):
    rule: str = Field(description="The rule in words; it goes into the system prompt.")
    pattern: str | None = Field(
        default=None,
        description="Optional regular expression (case-insensitive) the streaming guard enforces; "
        "a reply that matches is replaced by the off_brand fallback. Keep it within one sentence.",
    )

    unless_negated: bool = Field(
        default=False,
        description="The pattern fires on a claim, not on its negation or refusal: a match is ignored when a "
        "negation (never, not, no, cannot, don't, won't …) comes before it in the same clause, e.g. 'we never "
        "ask for your PIN' against a rule on asking for PINs.",
    )
    must_fire: list[str] = Field(
        default_factory=list,
        description="Sentences the pattern must catch; checked when the brand file loads.",
    )
    must_not_fire: list[str] = Field(
        default_factory=list,
        description="Sentences the pattern must let through (refusals, negations, harmless mentions); checked "
        "when the brand file loads.",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _needs_a_pattern(self) -> DontRule:
        if self.pattern is None and (self.unless_negated or self.must_fire or self.must_not_fire):
            raise ValueError("unless_negated, must_fire and must_not_fire need a pattern")
        return self


class Rules(_Strict):
    do: list[str] = Field(default_factory=list)
    dont: list[DontRule] = Field(
        default_factory=list,
        description="A plain string, or {rule, pattern} when the guard can enforce it.",
    )

    @field_validator("dont", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"rule": v} if isinstance(v, str) else v for v in value]
        return value


class LengthPolicy(_Strict):
    """How long a reply may be, and what the guard does with a longer one while it streams."""

    max_sentences: int = Field(
        default=4, ge=1, le=30, description="Longest reply, in sentences (prompted, enforced by the guard, evaluated)."
    )
    max_chars: int | None = Field(
        default=None, ge=40, description="Longest reply, in characters (enforced by the guard); unset: no limit."
    )
    max_list_items: int | None = Field(
        default=None,
        ge=0,
        description="Most list items (lines starting with -, *, •, + or 1.) in a reply; 0: no lists; unset: any.",
    )
    action: Literal["trim", "fallback"] = Field(
        default="trim",
        description="A reply that runs past the policy while it streams. trim: end it on its last whole sentence "
        "(or list item) and stop the model; fallback: replace it with the off_brand fallback.",
    )


class SignOff(_Strict):
    text: str | None = Field(default=None, description="How the persona signs off, e.g. '— Juniper'.")
    use: Literal["never", "always"] = "never"


class EmojiPolicy(_Strict):
    policy: Literal["none", "sparingly", "free"] = Field(
        default="sparingly",
        description="none: the guard treats any emoji as off-brand; sparingly: at most one per reply.",
    )
    allowed: list[str] = Field(default_factory=list, description="Emoji that fit the brand (with 'sparingly').")


class Example(_Strict):
    user: str
    assistant: str
    tags: list[str] = Field(default_factory=list, description="Topics; used to pick the examples for a question.")
    pinned: bool = Field(default=False, description="Always included in the prompt (never evicted).")


class Snippet(_Strict):
    topic: str
    text: str
    keywords: list[str] = Field(default_factory=list)


class Fallbacks(_Strict):
    off_topic: str = Field(description="When the question or the answer is outside the allowed topics.")
    off_brand: str = Field(description="When the guard stops a reply that broke a rule (banned phrase, filler …).")
    error: str | None = Field(default=None, description="When the model failed; unset means a retryable error event.")
    truncated: str | None = Field(
        default=None, description="When a reply cut by the length limit has no whole sentence."
    )
    language: dict[LanguageCode, str] = Field(
        default_factory=dict,
        description="When the reply was in another language than the user's: the fallback in the language "
        "the reply should have been in (by code); a language without one gets off_brand.",
    )
    unsure: str | None = Field(
        default=None,
        description="When the guard withholds a fact the reply was not given (guard.facts): say plainly that "
        "you do not have that figure to hand and where to find it. Unset means off_brand.",
    )


class ApiAccess(_Strict):
    key_env: str | None = Field(
        default=None, description="Environment variable holding this brand's key for POST /v1/chat/completions."
    )
    dev_key: str | None = Field(
        default=None,
        description="Used only in dev mode (APP_ENV=dev) while key_env is unset: a published, non-secret key "
        "for local development; ignored in production. Never put a real key in a brand file.",
    )


class ModelSettings(_Strict):
    model: str | None = Field(default=None, description="Model name sent upstream; unset means OPENAI_MODEL.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_reply_tokens: int | None = Field(default=None, ge=16, le=16_384, description="Unset means MAX_REPLY_TOKENS.")
    context_window: int = Field(default=16_384, ge=1_024, description="The model's context size in tokens.")
    history_max_tokens: int = Field(
        default=3_000, ge=0, description="At most this many tokens of conversation history (cost and focus)."
    )
    margin_tokens: int = Field(
        default=256, ge=0, description="Kept free for the request's overhead and estimate error."
    )
    examples_per_reply: int = Field(
        default=2, ge=0, le=10, description="Few-shot examples picked per question, besides pinned."
    )
    knowledge_per_reply: int = Field(default=3, ge=0, le=10, description="Knowledge snippets retrieved per question.")


class OffTopicCheck(_Strict):
    action: Literal["log", "fallback"] = Field(
        default="log", description="log: count and log an off-topic reply; fallback: also replace it (retract)."
    )
    threshold: float = Field(
        default=0.2, ge=0, le=1, description="Replies whose domain coverage is below this are off-topic."
    )
    min_terms: int = Field(
        default=3,
        ge=1,
        description="Replies with fewer content words are not judged (3: a short reply is judged too; one "
        "domain word in three or four carries it).",
    )


class HoldPolicy(_Strict):
    """What each check may hold back before text reaches clients (docs/prompting.md, "What each check
    costs"). The defaults add no delay to ordinary text: only what could still become a match is held,
    and the end-of-reply checks retract text that is already out."""

    rules: Literal["match", "sentence"] = Field(
        default="match",
        description="match: hold only text that could still become a violation (a prefix of a phrase, a "
        "partial pattern match); sentence: also release only whole, checked sentences.",
    )
    length: Literal["retract", "sentence"] = Field(
        default="retract",
        description="A reply cut by the token limit ends on its last whole sentence. retract: withdraw the "
        "cut sentence if it was out; sentence: hold unfinished sentences so a cut never withdraws text.",
    )
    off_topic: Literal["retract", "reply"] = Field(
        default="retract",
        description="With off_topic.action: fallback. retract: replace the reply after it ends; reply: hold "
        "the whole reply until it is judged (nothing streams).",
    )
    language: Literal["retract", "sentence"] = Field(
        default="retract",
        description="With language.action: fallback. retract: text streams while its language is judged (after "
        "the first sentence) and a wrong-language reply is withdrawn; sentence: nothing is released until "
        "the reply's language is known (the first sentence or so is held).",
    )


class LanguageCheck(_Strict):
    """The reply's language must be the user's when the brand speaks it, else the brand's first."""

    action: Literal["fallback", "log", "off"] = Field(
        default="fallback",
        description="A reply in a language other than the expected one. fallback: replace it (the language "
        "fallback, else off_brand); log: note it only; off: no check.",
    )
    min_words: int = Field(
        default=8,
        ge=3,
        le=60,
        description="The reply is judged once it has this many words and a sentence ended (or twice as many "
        "words); a shorter reply is judged at its end only when it has at least this many words.",
    )
    max_words: int = Field(
        default=48,
        ge=8,
        le=400,
        description="A reply whose language is still uncertain after this many words is given the benefit of "
        "the doubt (it passes).",
    )
    min_confidence: float = Field(
        default=0.9,
        gt=0.5,
        le=1,
        description="How sure the detector must be that the reply is not in an expected language (1 minus the "
        "expected languages' combined confidence) to call it wrong.",
    )
    user_min_words: int = Field(
        default=3,
        ge=1,
        le=30,
        description="The user's message is used for its language from this many words on; shorter ones "
        '("ok", "hola") fall back to the earlier user turns, then the client\'s locale.',
    )
    user_min_confidence: float = Field(
        default=0.4,
        ge=0.2,
        le=1,
        description="The detector's confidence in the user's language needed to use it (0.4: on the labelled "
        "set's 306 questions of three words or more, none wrong and 87 % known).",
    )


class CompetitorSettings(_Strict):
    """Who counts as a competitor beyond ``guard.competitors``."""

    industries: list[Industry] = Field(
        default_factory=list,
        description="Industries whose well-known companies (the shipped gazetteer persona/data/companies.yaml, "
        "with aliases) are competitors too. The brand's own name never is.",
    )
    allowed: list[str] = Field(
        default_factory=list,
        description="Partners and platforms the bot may name although the gazetteer lists them (as written, "
        "e.g. PayPal for a bank that supports it). Card networks and wallets (Visa, Apple Pay) are not in "
        "the gazetteer.",
    )


def _valid_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {pattern!r}: {exc}") from None
    return value


class FillerSettings(_Strict):
    """Generic assistant filler, as families of patterns (persona/filler.py)."""

    off: list[FillerFamily] = Field(default_factory=list, description="Built-in families this brand does not block.")
    patterns: list[str] = Field(
        default_factory=list,
        description="The brand's own filler patterns (regular expressions, case-insensitive; keep each within "
        "a sentence); a match is replaced by the off_brand fallback.",
    )

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        return _valid_patterns(value)


FactKind = Literal["money", "percent", "quantity", "time", "date", "phone", "email", "url", "name"]


class FamilySettings(_Strict):
    """Built-in pattern families of one rule (persona/families.py) a brand switches off, and its own."""

    off: list[str] = Field(default_factory=list, description="Built-in families this brand does not enforce.")
    patterns: list[str] = Field(
        default_factory=list,
        description="The brand's own patterns for this rule (regular expressions, case-insensitive; keep each "
        "within a sentence). For promise and meta_talk, a match a negation precedes is excused, as for the "
        "built-in families.",
    )

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        return _valid_patterns(value)


class ToneSettings(FamilySettings):
    """Markers of the register opposite the brand's (``voice.formality``), and contractions."""

    off: list[ToneFamily] = Field(  # type: ignore[assignment]
        default_factory=list, description="Built-in tone families this brand does not enforce."
    )


class PromiseSettings(FamilySettings):
    """Guarantees, invented offers, and financial, tax, legal or health advice."""

    off: list[PromiseFamily] = Field(  # type: ignore[assignment]
        default_factory=list, description="Built-in promise and advice families this brand does not enforce."
    )


class MetaSettings(FamilySettings):
    """Replies that talk about their own instructions or configuration."""

    off: list[MetaFamily] = Field(  # type: ignore[assignment]
        default_factory=list, description="Built-in meta-talk families this brand does not enforce."
    )


class FactCheck(_Strict):
    """Grounded facts (persona/facts.py): figures, names and contact details in a reply must be in what
    the reply was given (the brand's knowledge, examples and canned replies, the question, the recent
    turns)."""

    check: bool = Field(
        default=False,
        description="Check the reply's facts against its grounding. Off unless the brand turns it on: a "
        "brand with no knowledge would have every figure withheld.",
    )
    kinds: list[FactKind] = Field(
        default_factory=lambda: list(get_args(FactKind)),
        description="Which facts are checked: money, percent, quantity (durations, counts with units), time "
        "(clock times), date (dates, weekdays), phone, email, url, name (product and plan names, street "
        "addresses).",
    )
    action: Literal["fallback", "log"] = Field(
        default="fallback",
        description="fallback: hold a possible fact until it is complete and checked, and replace a reply "
        "with an ungrounded one by the unsure fallback; log: hold nothing, report an unsupported_fact note.",
    )


class SemanticCheck(_Strict):
    """Sentence embeddings (the optional ``semantic`` extra, ``persona/semantic.py``): each whole
    sentence of the reply is compared, off the token path, with the brand's domain and with its
    instructions. Off by default; a brand that turns it on needs the extra installed, or the server
    does not start."""

    enabled: bool = Field(default=False, description="Needs `pip install 'brandchat[semantic]'`.")
    leak_threshold: float = Field(
        default=0.65,
        ge=0,
        le=1,
        description="A sentence this close (cosine) to one of the brand's instruction sentences is a "
        "paraphrased leak (with leak_margin).",
    )
    leak_margin: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="…and at least this much closer to the instruction than to anything public (knowledge, "
        "examples, canned replies), so a fact the rules repeat may still be said.",
    )
    topic_threshold: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="A reply whose sentences are, on average (by words), less similar than this to the "
        "brand's domain is off-topic.",
    )
    min_words: int = Field(default=4, ge=1, description="Sentences with fewer words are not judged for topic.")
    off_topic_action: Literal["log", "fallback"] = Field(
        default="fallback", description="log: count and log an off-topic reply; fallback: also replace it."
    )


class ReviewCheck(_Strict):
    """The second opinion of a model (``GUARD_REVIEW_*`` settings, ``reply/reviewers.py``)."""

    enabled: bool = Field(
        default=True,
        description="Send this brand's reply sentences to the review model when GUARD_REVIEW_API_KEY is set; "
        "false: never.",
    )


class GuardSettings(_Strict):
    holdback_chars: int = Field(
        default=64,
        ge=16,
        le=400,
        description="With hold.rules or hold.length: sentence, unfinished-sentence text held back before "
        "release (and ≥ longest phrase).",
    )
    hold: HoldPolicy = Field(default_factory=HoldPolicy)
    competitors: list[str] = Field(default_factory=list, description="Names the bot never mentions.")
    competition: CompetitorSettings = Field(default_factory=CompetitorSettings)
    builtin_filler: bool = Field(
        default=True, description="Also block the built-in generic filler (the families of filler.off excepted)."
    )
    filler: FillerSettings = Field(default_factory=FillerSettings)
    tone: ToneSettings = Field(default_factory=ToneSettings)
    promises: PromiseSettings = Field(default_factory=PromiseSettings)
    meta_talk: MetaSettings = Field(default_factory=MetaSettings)
    off_topic: OffTopicCheck = Field(default_factory=OffTopicCheck)
    language: LanguageCheck = Field(default_factory=LanguageCheck)
    facts: FactCheck = Field(default_factory=FactCheck)
    semantic: SemanticCheck = Field(default_factory=SemanticCheck)
    review: ReviewCheck = Field(default_factory=ReviewCheck)


class OfflinePhrasing(_Strict):
    """How the offline demo provider dresses knowledge snippets in the brand's voice."""

    openers: list[str] = Field(default_factory=list, description="One is picked per question (deterministically).")
    intro: str = Field(default="", description="Said after the greeting when the user only says hello.")
    recall_name: str = Field(default="You told me your name is {name}.", description="'{name}' is replaced.")
    recall_unknown: str = Field(default="I don't think you've told me your name yet.")


class Theme(_Strict):
    primary_color: str = "#3b2f2f"
    accent_color: str = "#c8742c"


class Brand(_Strict):
    id: str = Field(pattern=_SLUG, description="Slug; equals the file name without .yaml.")
    version: str = Field(description="Bump on every change; logged with each reply's prompt.")
    name: str
    persona_name: str
    voice: Voice
    instructions: str = Field(default="", description="Anything else the model must know, in plain words.")
    languages: list[LanguageCode] = Field(
        default_factory=list,
        description="The languages the bot answers in, the default first: a reply must be in the user's "
        "language when it is one of these, else in the first (guard.language). Empty: in the user's language, "
        "whichever it is.",
    )
    rules: Rules = Field(default_factory=Rules)
    banned_phrases: list[str] = Field(default_factory=list, description="Never said; the guard enforces them.")
    allowed_topics: list[str] = Field(default_factory=list)
    length: LengthPolicy = Field(default_factory=LengthPolicy)
    sign_off: SignOff = Field(default_factory=SignOff)
    emoji: EmojiPolicy = Field(default_factory=EmojiPolicy)
    greeting: str = "Hi!"
    no_match: str = Field(
        default="I'm not sure about that one.", description="The offline demo's answer when nothing matches."
    )
    examples: list[Example] = Field(default_factory=list)
    knowledge: list[Snippet] = Field(default_factory=list)
    fallbacks: Fallbacks
    api: ApiAccess = Field(default_factory=ApiAccess)
    allowed_origins: list[str] = Field(
        default_factory=list, description="Sites allowed to embed this brand's chat; empty means ALLOWED_ORIGINS."
    )
    model: ModelSettings = Field(default_factory=ModelSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    offline: OfflinePhrasing = Field(default_factory=OfflinePhrasing)
    theme: Theme = Field(default_factory=Theme)

    _api_key: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sign_off_has_text(self) -> Brand:
        if self.sign_off.use == "always" and not self.sign_off.text:
            raise ValueError("sign_off.use is 'always' but sign_off.text is empty")
        return self

    @property
    def api_key(self) -> str | None:
        """The key for the OpenAI-compatible endpoint (resolved by :meth:`resolve_api_key`)."""
        return self._api_key

    def resolve_api_key(self, environ: Mapping[str, str] | None = None, *, dev_keys: bool = False) -> None:
        """The key from ``api.key_env``; the published ``api.dev_key`` only when ``dev_keys``."""
        env = os.environ if environ is None else environ
        value = env.get(self.api.key_env) if self.api.key_env else None
        self._api_key = value or (self.api.dev_key if dev_keys else None) or None

    def origin_allowed(self, origin: str | None) -> bool:
        """True when the brand names no origins, or ``origin`` is one of them."""
        return not self.allowed_origins or "*" in self.allowed_origins or origin in self.allowed_origins


_T = TypeVar("_T")
_PER_BRAND_MAX = 256  # brand objects remembered per cached function (cleared, not evicted one by one)


def per_brand(compute: Callable[[Brand], _T]) -> Callable[[Brand], _T]:
    """``compute(brand)`` remembered per brand object and version. The object is kept with the value: an
    id() is reused once its object is gone, and a copy of a brand with other settings (model_copy, same id
    and version) must not get a dead copy's value."""
    cache: dict[tuple[int, str, str], tuple[Brand, _T]] = {}

    @functools.wraps(compute)
    def cached(brand: Brand) -> _T:
        key = (id(brand), brand.id, brand.version)
        hit = cache.get(key)
        if hit is not None and hit[0] is brand:
            return hit[1]
        value = compute(brand)
        if len(cache) >= _PER_BRAND_MAX:
            cache.clear()
        cache[key] = (brand, value)
        return value

    return cached
