"""Off-brand replies beyond filler, as families of patterns: the wrong register, unsafe promises and
advice, and talk about the bot's own instructions.

Like :mod:`persona.filler`, each family is one regular expression over the many ways a model says
the same off-brand thing, and they all join the guard's one ``regex`` pattern (:mod:`persona.checks`),
so they stream like any pattern: only text that could still become a match is held (typically a word),
and no prefix of a match is ever released. Each fires its own rule:

=============  ===========================================================  ===========
rule           families                                                      fallback
=============  ===========================================================  ===========
``tone``       the register opposite ``voice.formality``: ``slang``,          off_brand
               ``chummy`` for a formal brand; ``legalese``, ``corporate``
               for a casual one; ``contractions`` when ``voice.contractions``
               is false
``promise``    ``guarantee``, ``invented_offer``, ``financial_advice``,      off_brand
               ``tax_legal_advice``, ``health_advice`` (excused when negated)
``meta_talk``  ``instructions``, ``configuration`` (excused when negated)    off_topic
=============  ===========================================================  ===========

Promise and meta-talk families fire on the claim, not on its refusal: a match that a negation
precedes in the same clause (:func:`persona.checks.negated`) is excused, so "I can't promise it
arrives Friday", "I am not able to say whether you should buy shares" and "I can't share my
instructions" pass. Tone families are not excused ("not gonna lie" is slang all the same).

A brand switches a family off (``guard.tone.off``, ``guard.promises.off``, ``guard.meta_talk.off``)
and adds its own patterns (``….patterns``). Patterns run on the raw reply: a space is any whitespace
run and an apostrophe is straight or typographic (:func:`persona.filler.words`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, get_args

from persona.brand import Brand, MetaFamily, PromiseFamily, ToneFamily
from persona.filler import phrase_pattern as _words

_WILL = r"(?:'ll| will)"

#: Markers of an informal register, off-brand for a formal brand.
SLANG: Final[str] = _words(
    r"\b(?:gonna|wanna|gotta|kinda|sorta|dunno|lemme|gimme|ya|y'all|lol|lmao|rofl|omg|btw|tbh|imo|fyi|idk"
    r"|haha+|hehe+|xd|yep|yup|yeah|nope|nah|dude|buddy|mate|bro|folks|guys)\b"
)
CHUMMY: Final[str] = _words(
    r"\b(?:no worries|no biggie|no probs?|no problemo|awesome|yay|woo+hoo+|whoops|oops|totally|cheers"
    r"|hey there|hiya|howdy|you bet|sweet|cool beans|easy peasy|heads up|fingers crossed|oh no|ooh+|yikes|bummer"
    r"|stoked|gotcha|no sweat|piece of cake|hang tight|my bad|whoa|wow|tons of|a ton of|swing by|pop (?:in|into|by))\b"
    r"|\bsuper (?:easy|quick|simple|fast|helpful|handy|cool|good|nice|safe|secure|convenient|important|"
    r"straightforward|smooth)\b"
)
#: Contractions, off-brand when ``voice.contractions`` is false (not possessives: "the customer's card").
CONTRACTIONS: Final[str] = (
    _words(
        r"\b(?:i'm|i've|i'd|i'll|you're|you've|you'd|you'll|we're|we've|we'd|we'll|they're|they've|they'd|they'll"
        r"|he's|she's|it's|it'll|that's|that'll|there's|here's|what's|who's|where's|how's|let's"
        r"|(?:do|does|did|is|are|was|were|has|have|had|would|should|could|must|need|might)n't|can't|won't|shan't|ain't)"
    )
    + r"(?![\w'\u2019])"
)
#: Markers of a stiff, legal or corporate register, off-brand for a casual brand.
LEGALESE: Final[str] = _words(
    r"\b(?:pursuant to|hereby|herein|hereto|heretofore|thereof|aforementioned|aforesaid|notwithstanding"
    r"|in accordance with|in lieu of|the undersigned|in the event that|with regard to your|as per (?:our|the|your)"
    r"|furthermore|moreover|henceforth|whereby|wherein)\b"
    r"|\b(?:(?:please|kindly) (?:be advised|note that|be informed)|be advised that)\b"
    r"|\bwe (?:regret to inform you|wish to inform you|would like to inform you|must inform you)\b"
)
CORPORATE: Final[str] = _words(
    r"\b(?:valued (?:customer|client|patron)s?|dear (?:customer|client|sir|madam|valued)"
    r"|at your earliest convenience|(?:please )?do not hesitate to contact|we acknowledge receipt"
    r"|your (?:call|query|inquiry|enquiry|request|business) is (?:important|valuable) to us|rest assured"
    r"|we apologi[sz]e for any inconvenience(?: (?:this|that) may have)?(?: caused)?"
    r"|should you (?:require|wish|have any)|yours (?:sincerely|faithfully)|kind regards"
    r"|we are unable to accommodate|regarding your (?:inquiry|enquiry|query|request)"
    r"|thank you for your (?:inquiry|enquiry|patience|understanding|correspondence)"
    r"|we (?:appreciate|value) your (?:patience|understanding|business|custom|feedback)"
    r"|please find (?:below|attached|enclosed)|we are pleased to (?:inform|confirm|advise)"
    r"|kindly (?:note|provide|confirm|contact|refer|allow|ensure|send|let))\b"
)

_ORDER = r"(?:it|they|this|that|your (?:\w+ )?(?:order|bag|beans|coffee|parcel|package|delivery|card|transfer|payment))"
GUARANTEE: Final[str] = _words(
    r"\b(?:i|we) (?:can |absolutely |personally |100% )?(?:guarantee|promise) (?:you|that|it|they|this|your|the)\b"
    r"|\bguaranteed (?:to|delivery|arrival|by|returns?|income|profits?|approval|growth|gains?)\b"
    r"|\b(?:guarantee|promise)[sd]? (?:you )?(?:\w+ ){0,5}(?:will|'ll|to) "
    r"(?:arrive|be delivered|deliver|get there|reach you)"
    rf"|\b{_ORDER}{_WILL} (?:definitely|certainly|absolutely|surely|100%) "
    r"(?:arrive|be (?:there|delivered|with you)|reach you)\b"
    rf"|\b{_ORDER}{_WILL} (?:\w+ )?(?:arrive|be delivered|be there|reach you|get to you) (?:by |on |before )?"
    r"(?:tomorrow|today|tonight|this (?:week|weekend)|next week|the weekend"
    r"|(?:mon|tues|wednes|thurs|fri|satur|sun)day)\b"
    r"|\bi(?:'ll| will) (?:make sure|ensure|personally see to it|see to it) (?:that )?(?:it|they|your|you)\b"
    r"|\byour (?:money|savings|deposits?|funds?|investment) (?:is|are|will be) "
    r"(?:completely |totally |absolutely |100% )"
    r"(?:safe|secure|protected)\b"
    r"|\b(?:will|'ll) (?:definitely|certainly|surely|absolutely) "
    r"(?:be approved|get (?:the|a|your) (?:mortgage|loan|approval))"
    r"|\b100\s?% (?:guaranteed|safe|secure|risk[- ]free|refund|money[- ]back|satisfaction)"
    r"|\brisk[- ]free\b|\b(?:can(?:'t|not| not) lose|no risk at all|zero risk)\b"
)
_OFFER = (
    r"(?:discount|coupon|promo(?:tional)? code|discount code|voucher|credit|store credit|gift card|freebie|free bag)"
)
INVENTED_OFFER: Final[str] = _words(
    r"\b(?:i|we)(?:'ll| will| can| could| am going to|'m going to| are going to|'re going to)? "
    r"(?:give|send|apply|offer|add|issue|email|throw in)(?: you)? (?:a |an |your |the |some )?"
    rf"(?:\d+\s?% |special |exclusive |one-time |little |free )?{_OFFER}s?\b"
    r"|\b(?:i|i'll|i will)(?: personally)? (?:issue|process|send|give) you (?:a )?(?:full )?refund\b"
    r"|\b(?:i|we)(?:'ll| will| can| could)? (?:give|send|add|offer|throw in)(?: you)? (?:a |an |some )?"
    r"(?:free|complimentary|bonus) (?:sample|bag|gift|upgrade|shipping|delivery|month)s?\b"
    r"|\bi(?:'ve| have) (?:just |now |already |gone ahead and )?"
    r"(?:cancelled|canceled|refunded|processed|applied|credited"
    r"|issued|upgraded|reset|unlocked|unblocked|waived|reversed|expedited)\b"
    r"|\bi(?:'ll| will| can) (?:go ahead and )?(?:cancel|refund|waive|reverse|credit|process|upgrade|unblock|unlock"
    r"|reset|expedite|rush) (?:your|the|that|this|it)\b"
    r"|\buse (?:the |my |our |this )?(?:promo|discount|coupon|voucher) code\b"
    r"|\b(?:with|enter) (?:the )?code (?-i:[A-Z0-9]{4,})\b"
)
_FIN = (
    r"(?:in |into )?(?:stocks?|shares|equities|bitcoin|crypto\w*|bonds?|gold|(?:index |mutual )?funds?|etfs?|an? isa"
    r"|isas|property|real estate|the (?:stock )?market|your (?:savings|money|pension|cash)|some (?:money|savings|cash)"
    r"|it all|everything)"
)
# What "invest", "buy" or "sell" must be about to be financial advice ("invest in a good grinder" is not).
_INVEST = rf"(?:{_FIN}|(?:in|into) (?:the |our |an? )?(?:[\w-]+ )?(?:saver|account|isa|bonds?|funds?|market))\b"
FINANCIAL_ADVICE: Final[str] = _words(
    r"\byou (?:should|must|ought to|need to|'d better|had better|have to) (?:definitely |really |probably |seriously )?"
    rf"(?:invest {_INVEST}|invest[.!?,;]|(?:buy|sell) {_FIN}\b"
    r"|put (?:your|some|all|more) (?:\w+ )?(?:money|savings|cash) (?:in|into)\b"
    r"|move (?:your|all) (?:\w+ )?(?:money|savings) (?:in|into|to)\b)"
    r"|\bi (?:would |'d )?(?:strongly |definitely )?(?:recommend|suggest|advise) "
    rf"(?:investing {_INVEST}|(?:buying|selling) {_FIN}\b|you (?:invest {_INVEST}|buy {_FIN}\b|sell {_FIN}\b)"
    r"|putting (?:your|some|all) (?:\w+ )?(?:money|savings|cash)\b)"
    r"|(?:'s|\bis|\bare) (?:a |an )?(?:very |really |completely )?(?:(?:safe|sure|secure) (?:bet|investment)"
    r"|no-brainer investment|(?:safe|sure|smart) place to put your (?:money|savings)|safe way to (?:grow|invest))\b"
    r"|\b(?:now is|it's|it is) (?:a |the )?(?:good|great|right|best|perfect) time to (?:invest|buy|sell)\b"
    r"|\bwill (?:definitely |certainly )?(?:go up|rise|increase|double) in value\b"
)
TAX_LEGAL_ADVICE: Final[str] = _words(
    r"\byou (?:won't|will not|wouldn't|would not|don't|do not) (?:have to )?(?:pay|owe) (?:any )?(?:tax|taxes)\b"
    r"|\byou can (?:deduct|write off|claim) (?:it|this|that|the \w+|them) (?:on|against|from) (?:your )?tax"
    r"|\blegally,? you (?:can|cannot|can't|must|are (?:allowed|entitled|required)|have to|don't have to|are not)\b"
    r"|\byou(?:'re| are) (?:legally )?(?:entitled to (?:sue|compensation|damages)|allowed to (?:sue|withhold))\b"
    r"|\byou (?:can|should) (?:sue|take (?:them|us|it) to court)\b"
)
HEALTH_ADVICE: Final[str] = _words(
    r"\b(?:caffeine|coffee|decaf|espresso|it)(?:'s| is| are) (?:perfectly |completely |totally )?"
    r"(?:safe|fine|okay|ok|harmless|good) (?:for (?:you )?(?:during |while |when |if )?|during |while |when |if )"
    r"(?:you(?:'re| are) )?(?:pregnan\w*|breastfeeding|nursing|kids|children|your heart|heart|blood pressure|anxiety|"
    r"on medication)\b"
    r"|\b(?:it's|it is) (?:perfectly |totally )?(?:safe|fine|ok|okay) to (?:drink|have) "
    r"(?:\w+ ){0,4}(?:while|when|during|if) (?:you(?:'re| are) )?(?:pregnant|breastfeeding|nursing|on medication)\b"
    r"|\byou can (?:safely )?(?:drink|have) (?:up to )?\d+ (?:cups|mg|shots)\b"
    r"|\b(?:coffee|caffeine) (?:cures|prevents|treats|will cure|helps (?:with|cure))\b"
    r"|\b(?:coffee|caffeine|it) (?:is|can be) (?:good|great|healthy|beneficial) for (?:your|the) "
    r"(?:heart|health|liver|brain"
    r"|metabolism|weight)\b"
)

_OWN = r"(?:instructions|guidelines|system prompt|prompt|rules|programming|directives|configuration|brief|briefing)"
INSTRUCTIONS: Final[str] = _words(
    rf"\bmy (?:(?:system|initial|original|hidden) )?{_OWN} (?:say|says|tell me|state|require|ask me|include|are to"
    r"|are as follows|are:|is to|specif(?:y|ies))"
    rf"|\b(?:according to|as per|per|based on|following|in line with) my {_OWN}\b"
    r"|\bi(?:'ve| have| was| am|'m)(?: been)? (?:instructed|told|programmed|configured|prompted|briefed|asked) to\b"
    rf"|\b(?:here (?:is|are)|these are|below (?:is|are)) my {_OWN}\b"
    r"|\b(?:the|my) (?:system|developer|hidden|initial) (?:prompt|message|instructions)\b"
    r"|\bi(?:'m| am) (?:supposed|required|meant|expected|programmed|designed) to (?:sound|act|talk|speak|write|pretend"
    r"|play|role-?play|be (?:warm|playful|formal|friendly|precise|calm|a|an)|stay in character|always|never"
    r"|use|avoid)\b"
    r"|\bas (?:a|an|the) (?:[\w&\x27\u2019-]+ ){0,4}(?:assistant|chatbot|bot|persona|character)"
    r"(?: for| of| at)? [^.!?\n]{0,40}?"
    r"i(?:'m| am) (?:required|supposed|meant|instructed|told|programmed|only allowed|allowed)\b"
    r"|\bmy (?:persona|character|role) (?:is|here is|description)\b"
    r"|\b(?:as instructed|as i (?:was|have been|'ve been) (?:told|instructed))\b"
    r"|\bwhat i (?:was|have been|'ve been) (?:told|instructed|asked|programmed) to\b"
    r"|\b(?:wants|has asked|instructed|programmed|configured|set|requires|expects) me (?:up )?to\b"
    r"|\bthe (?:rules|guidelines|instructions) i (?:follow|was given|have been given|work (?:by|under)|operate under)\b"
    r"|\bi(?:'ve| have) been (?:set up|given (?:instructions|guidelines|rules|a (?:prompt|persona|script)))\b"
    r"|\b(?:my|the) (?:brand|voice|tone[- ]of[- ]voice|style) (?:guide|guidelines|rules|brief) "
    r"(?:say|says|tell|asks?|requires?)\b"
)
CONFIGURATION: Final[str] = _words(
    r"\bi(?:'m| am) (?:running on|powered by|based on|built on|a version of) (?:gpt|openai|chatgpt|claude|anthropic"
    r"|llama|mistral|gemini|a (?:large )?language model)"
    r"|\bmy (?:temperature|context window|token limit|max(?:imum)? tokens|model name|model settings|canary)\b"
    r"|\b(?:temperature|max_tokens|top_p|context_window)(?: is| of| set to|:|=)\s?\d"
)


@dataclass(frozen=True)
class Family:
    rule: str  # the rule it fires: tone, promise or meta_talk
    pattern: str
    negatable: bool  # a match a negation precedes is excused


TONE: Final[dict[str, str]] = {
    "slang": SLANG,
    "chummy": CHUMMY,
    "contractions": CONTRACTIONS,
    "legalese": LEGALESE,
    "corporate": CORPORATE,
}
PROMISE: Final[dict[str, str]] = {
    "guarantee": GUARANTEE,
    "invented_offer": INVENTED_OFFER,
    "financial_advice": FINANCIAL_ADVICE,
    "tax_legal_advice": TAX_LEGAL_ADVICE,
    "health_advice": HEALTH_ADVICE,
}
META: Final[dict[str, str]] = {"instructions": INSTRUCTIONS, "configuration": CONFIGURATION}

# Every family named in the brand model has a pattern here, and no other.
assert set(TONE) == set(get_args(ToneFamily)), "persona.brand.ToneFamily and TONE disagree"
assert set(PROMISE) == set(get_args(PromiseFamily)), "persona.brand.PromiseFamily and PROMISE disagree"
assert set(META) == set(get_args(MetaFamily)), "persona.brand.MetaFamily and META disagree"

#: Which tone families a register rules out: the markers of the opposite register.
OPPOSITE: Final[dict[str, tuple[str, ...]]] = {
    "formal": ("slang", "chummy"),
    "casual": ("legalese", "corporate"),
    "neutral": (),
}


def tone_families(brand: Brand) -> list[str]:
    """The tone families that apply to the brand: its register's opposite, and contractions if it forbids them."""
    names = list(OPPOSITE[brand.voice.formality])
    if not brand.voice.contractions:
        names.append("contractions")
    return [n for n in names if n not in brand.guard.tone.off]


def families(brand: Brand) -> list[Family]:
    """Every family pattern the brand's guard runs (built-in, then its own), in rule order."""
    settings = brand.guard
    out = [Family("tone", TONE[n], negatable=False) for n in tone_families(brand)]
    out += [Family("tone", f"(?:{p})", negatable=False) for p in settings.tone.patterns]
    out += [Family("promise", rx, True) for n, rx in PROMISE.items() if n not in settings.promises.off]
    out += [Family("promise", f"(?:{p})", True) for p in settings.promises.patterns]
    out += [Family("meta_talk", rx, True) for n, rx in META.items() if n not in settings.meta_talk.off]
    out += [Family("meta_talk", f"(?:{p})", True) for p in settings.meta_talk.patterns]
    return out
