"""Generic assistant filler as families of patterns, not lists of phrases.

A phrase list catches "I hope this helps" but not "I hope that answers it" or "Hope this was
helpful"; each family below is one regular expression over the ways a model says the same empty
thing. They join the don't-patterns in the guard's one ``regex`` pattern (:mod:`persona.checks`), so
they stream like any pattern: only text that could still become a match is held (typically one word,
"I" or "as", until the next word rules it out), and no prefix of a match is ever released.

Patterns run on the raw reply, so a space is any run of whitespace and an apostrophe is straight or
typographic (:func:`_words` writes both). A brand switches a family off (``guard.filler.off``), adds
its own patterns (``guard.filler.patterns``), or drops them all (``guard.builtin_filler: false``).

What is deliberately *not* filler: "Happy to help!" on its own (a brand's opener may say it), "Please
note" (a bank states conditions that way), "let me know if you need a grind recommendation" (an offer
of something specific). The families aim at the empty, generic forms only.
"""

from __future__ import annotations

from typing import Final, get_args

from persona.brand import Brand, FillerFamily

_APOSTROPHE = "['\u2019]"


def phrase_pattern(pattern: str) -> str:
    """A readable pattern → the one the guard runs: spaces match any whitespace run, apostrophes both forms."""
    return pattern.replace("'", _APOSTROPHE).replace(" ", r"\s+")


_AI = r"(?:an? )?(?:ai|artificial intelligence|(?:large )?language model|llm|chat\s*bot|virtual assistant|bot)"

#: Family → pattern (case-insensitive). Each begins on a word boundary so the partial match that is
#: held is as short as the family allows.
FAMILIES: Final[dict[str, str]] = {
    # "As an AI language model, …", "As a large language model", "I'm just an AI", "being an AI"
    "ai_disclaimer": phrase_pattern(
        rf"\b(?:as|being) {_AI}(?: (?:language )?model| assistant| system)?\b"
        rf"|\bi(?:'m| am) (?:just |only |merely |simply )?{_AI}\b"
    ),
    # "I don't have personal opinions", "I do not have feelings", "I can't form personal preferences"
    "no_feelings": phrase_pattern(
        r"\bi (?:don't|do not|can't|cannot|can not) (?:have|hold|form|experience|possess) (?:any )?(?:personal )?"
        r"(?:opinions?|feelings?|emotions?|preferences?|beliefs?|experiences?|views?)\b"
    ),
    # "I hope this helps", "Hope that was helpful", "I trust this answers your question"
    "hope_it_helps": phrase_pattern(
        r"\b(?:i )?(?:hope|trust) (?:this|that|it|my answer|the above|this information)(?: information)? "
        r"(?:helps|helped|was helpful|is helpful|will help|clarifies|answers|has been helpful)\b"
    ),
    # "Feel free to reach out", "Don't hesitate to ask", "Let me know if you have any other questions",
    # "If you have any further questions, …"
    "invite_more": phrase_pattern(
        r"\b(?:please )?feel free to (?:reach out|ask|contact|get in touch|let (?:me|us) know)\b"
        r"|\b(?:please )?(?:don't|do not) hesitate to (?:ask|reach out|contact|get in touch|let (?:me|us) know)\b"
        r"|\blet me know if (?:you have|there are) any (?:other |more |further |additional )?"
        r"(?:questions?|concerns?)\b"
        r"|\bif you have any (?:other |more |further |additional )(?:questions?|concerns?)\b"
        r"|\blet me know if (?:there's|there is|you need) anything else\b"
    ),
    # "Great question!", "What an excellent question", "That's a really good question"
    "praise_question": phrase_pattern(
        r"\b(?:(?:really|very|such an?) )?(?:great|excellent|good|fantastic|wonderful|interesting|brilliant) "
        r"question\b|\bi(?:'m| am) (?:so )?glad you asked\b"
    ),
    # "I completely understand your concern", "Your security is our top priority", "I apologise for any
    # inconvenience", "We take these matters very seriously"
    "reassurance": phrase_pattern(
        r"\bi (?:completely |totally |fully )?understand your (?:concern|frustration|worry)\b"
        r"|\byour (?:satisfaction|security|safety|privacy) is our (?:top |highest |number one |first )?priority\b"
        r"|\b(?:i|we) apologi[sz]e for (?:any|the) inconvenience\b"
        r"|\bwe take (?:this|these matters|your (?:security|privacy|concerns?)) (?:very )?seriously\b"
    ),
    # "I'd be happy to help", "I would be more than glad to assist", "I'm more than happy to help",
    # "How can I assist you today?", "I'm here to help with any questions you may have"
    # (not "I'm happy to help you find a decaf": an offer of something specific)
    "happy_to_help": phrase_pattern(
        r"\bi(?:'d| would) (?:be )?(?:more than |so |very |really )?(?:happy|glad|delighted) to (?:help|assist)\b"
        r"|\bi(?:'m| am) more than (?:happy|glad|delighted) to (?:help|assist)\b"
        r"|\bhow (?:can|may) i (?:help|assist) you today\b"
        r"|\bi(?:'m| am) (?:always )?here to (?:help|assist)(?: you)? with any(?:thing| questions?)\b"
    ),
    # "It's important to note that", "It is worth noting", "It's crucial to remember"
    "worth_noting": phrase_pattern(
        r"\bit(?:'s| is) (?:important|worth|crucial|essential|vital) (?:to (?:note|mention|remember|keep in mind|"
        r"point out)|noting|mentioning|remembering)\b"
    ),
    # "In conclusion", "In summary", "To sum up"
    "in_conclusion": phrase_pattern(r"\b(?:in conclusion|in summary|to sum (?:it )?up|to summari[sz]e)\b"),
    # Stock phrases of generated text
    "cliche": phrase_pattern(
        r"\bin today's (?:fast-paced|digital|modern|ever-changing|busy) world\b"
        r"|\bdelve (?:into|deeper)\b"
        r"|\bever-(?:evolving|changing) landscape\b"
    ),
}

# Every family named in the brand model has a pattern here, and no other.
assert set(FAMILIES) == set(get_args(FillerFamily)), "persona.brand.FillerFamily and FAMILIES disagree"

#: Phrasings every family must catch (``tests/test_guard_classes.py``; the old built-in phrase list
#: is among them).
BUILTIN_FILLER: Final[tuple[str, ...]] = (
    "as an AI language model",
    "as a large language model",
    "as an AI assistant",
    "as an AI, I",
    "I'm just an AI",
    "I am just an AI",
    "I hope this helps",
    "I hope that helps",
    "great question",
    "in today's fast-paced world",
    "it's important to note that",
    "it is important to note that",
    "I don't have personal opinions",
    "I do not have personal opinions",
    "feel free to reach out",
)


def filler_patterns(brand: Brand) -> list[str]:
    """The filler patterns the brand's guard runs: the built-in families it keeps, then its own."""
    settings = brand.guard.filler
    patterns = [rx for name, rx in FAMILIES.items() if name not in settings.off] if brand.guard.builtin_filler else []
    return patterns + [f"(?:{p})" for p in settings.patterns]
