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

import re
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

#: A bureaucratic, passive register (off-brand for a casual brand): requests "noted", actions "effected
#: via", the company and the customer in the third person, numbers doubled in brackets ("four (4)").
BUREAUCRATIC: Final[str] = _words(
    r"\byour (?:request|query|enquiry|inquiry|complaint|feedback|message|concern|case|application|instruction)s? "
    r"(?:has|have) been (?:duly )?(?:noted|received|logged|registered|recorded|acknowledged|forwarded|escalated"
    r"|actioned|filed)\b"
    r"|\bbe (?:performed|effected|submitted|executed"
    r"|undertaken|conducted|actioned|initiated|lodged|rendered) (?:via|through|by|in|using|at|within|prior|upon)\b"
    r"|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fourteen|fifteen|twenty|thirty|sixty"
    r"|ninety) \(\d{1,3}\)"
    r"|\bthe (?:company|subscriber|purchaser|account holder|customer|client|consumer) (?:shall|must|may|is required"
    r"|is advised|is entitled|recommends|reserves|agrees|acknowledges|is responsible)\b"
    r"|\b(?:subsequent to|in respect of|upon receipt of|for the purposes? of|shall be|shall not|duly noted"
    r"|as stipulated|prior to (?:the )?(?:commencement|submission|completion|dispatch))\b"
)
#: Condescension and rudeness, off-brand in any register: "ugh", "as I said", "it's literally on the
#: website", "not that hard.", "did you even read …", "… af". Literal phrases, so they are walked in the
#: guard's phrase trie (a constant cost per character) instead of the pattern (a cost per alternative).
CONDESCENDING_PHRASES: Final[tuple[str, ...]] = (
    *["ugh", "ughh", "duh", "smh", "pfft", "sheesh", "jeez", "geez", "af"],
    "obviously,",
    *(f"{lead} i {verb}" for lead in ("as", "like") for verb in (
        "said", "already said", "just said", "told you", "already told you", "mentioned", "already mentioned",
        "explained", "already explained")),
    *(f"{how} on {whose} {where}" for how in ("literally", "clearly", "right there") for whose in ("the", "our")
      for where in ("website", "site", "page", "faq", "label", "bag")),
    *(f"not {how} {hard}{end}" for how in ("that", "so", "exactly") for hard in ("hard", "difficult", "complicated")
      for end in ".?"),
    "not rocket science", "isn't rocket science",
    *(f"did you {adv} {verb}" for adv in ("even", "actually") for verb in ("read", "look", "check", "try")),
    "seriously?", "honestly?", "buy it already", "what did you expect", "your own fault", "not my problem",
    "deal with it", "google it", "read the manual", "common sense",
)  # fmt: skip
CONDESCENDING: Final[str] = _words("|".join(re.escape(p).replace("\\ ", " ") for p in CONDESCENDING_PHRASES))

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
    r"|\b(?:completely|totally|perfectly|absolutely|entirely|guaranteed) (?:safe|secure|harmless|risk[- ]free)\b"
    r"|\byou have my (?:word|promise)\b|\b(?:i|we) give you (?:my|our) word\b|\bguaranteed\s?[.!]"
    r"|\b(?:on your doorstep|at your door|in your hands|in your (?:mail|letter)box) "
    r"(?:by )?(?:first thing )?(?:tomorrow|today|tonight|this (?:week|weekend|afternoon|evening)|next (?:week|day)"
    r"|(?:on |by )?(?:mon|tues|wednes|thurs|fri|satur|sun)day)\b"
    r"|\b(?:we|i)(?:'ll| will) (?:get|have) (?:it|them|this|that|your (?:\w+ )?(?:order|bag|beans|coffee|parcel"
    r"|package|card)) (?:to you|delivered|there|with you|out to you) (?:by|on|before) (?:the )?(?:\d|tomorrow|today"
    r"|tonight|mon|tues|wednes|thurs|fri|satur|sun|next|this|the weekend)"
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
    r"|\buse (?:the |my |our |this )?(?:promo|discount|coupon|voucher) code\b"
    r"|\b(?:with|enter) (?:the )?code (?-i:[A-Z0-9]{4,})\b|\bon the house\b"
    r"|\b(?:add|enter|use|apply|type|quote|mention|put) (?:the )?(?:code )?(?-i:[A-Z][A-Z0-9]{4,})\b"
)
_DONE = (
    r"(?:cancelled|canceled|refunded|processed|applied|credited|issued|upgraded|reset|unlocked|unblocked|waived"
    r"|reversed|expedited|recalled|frozen|unfrozen|blocked|stopped|paused|skipped|closed|arranged|booked|scheduled"
    r"|raised|increased|lowered|removed|transferred|replaced|reissued|rescheduled|rerouted|disputed|escalated"
    r"|amended|updated|changed)"
)
#: The bot claiming an action on the customer's account or order that it cannot take.
ACCOUNT_ACTION: Final[str] = _words(
    rf"\bi(?:'ve| have) (?:just |now |already |gone ahead and |successfully )?{_DONE}\b"
    rf"|\bwe(?:'ve| have) (?:just |now |already |gone ahead and |successfully ){_DONE}\b"
    r"|\bi(?:'ll| will| can)(?: go ahead and| now| personally)? (?:cancel|refund|waive|reverse|credit|process|upgrade"
    r"|unblock|unlock|reset|expedite|rush|recall|freeze|unfreeze|block|reissue|reroute|raise|increase) "
    r"(?:your|the|that|this|it)\b"
    r"|\bi(?:'ll| will| can)(?: go ahead and)? (?:arrange|make sure|ensure|see to it|get|have) (?:for )?"
    rf"(?:the|your|that|this|it) (?:\w+ ){{0,3}}(?:to be |be |is |gets? )?{_DONE}\b"
    rf"|\b(?:has|have) (?:now |just |already |successfully )been {_DONE}\b"
)
_SECRET = (
    r"(?:(?:full|complete|whole|long|16-digit|sixteen-digit|card|online banking|banking|account|login|security"
    r"|one-time|memorable) )*(?:pin|pin number|password|passcode|card number|card details|security code|cvv|cvc"
    r"|cv2|otp|one-time (?:pass)?code|login details|log-in details|sign-in details|memorable word"
    r"|security answers?)\b"
)
#: Asking the customer for a secret (PIN, password, full card number): fires on the request, not on
#: "we will never ask for your PIN".
ASKS_FOR_SECRETS: Final[str] = _words(
    r"\b(?:tell|send|give|share|provide|confirm|text|email|message|read out) (?:me|us)(?: with)? (?:your|the) "
    rf"{_SECRET}"
    rf"|\b(?:reply|respond) with (?:your|the) {_SECRET}|\bwhat(?:'s| is| are) your {_SECRET}"
    rf"|\b(?:enter|type|paste|put|post|drop) (?:your|the) {_SECRET} (?:here|below|in (?:the|this) chat|into "
    r"(?:the|this) chat)"
    rf"|\b(?:i|we)(?:'ll| will)? need (?:your|the) {_SECRET}|\bask(?:s|ing)? (?:you )?for (?:your|the) {_SECRET}"
    rf"|\b(?:can|could|would) you (?:please )?(?:tell|send|give|share|provide|confirm) (?:me |us )?(?:your|the) "
    rf"{_SECRET}"
)
_FIN = (
    r"(?:in |into )?(?:stocks?|shares|equities|bitcoin|crypto\w*|bonds?|gold|(?:index |mutual )?funds?|etfs?|an? isa"
    r"|isas|property|real estate|the (?:stock )?market|your (?:savings|money|pension|cash|shares|stocks|investments"
    r"|portfolio|bonds|gold|crypto|bitcoin|property|house|home)|some (?:money|savings|cash)"
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
    r"|\b(?:buying|selling|investing|to buy|to sell|to invest)(?: (?:in|into|gold|shares|stocks|bonds|property|a house"
    r"|a home|bitcoin|crypto|funds?|an isa|now|today|right now|at the moment|this year|more|some|them|it))* "
    r"(?:is|would be|could be|seems|will be|looks) (?:a |an |like a )?(?:very |really |quite )?(?:sound|good|great"
    r"|smart|wise|sensible|safe|solid|prudent|excellent)(?: (?:investment|idea|move|decision|choice|bet))?\b"
    r"|\b(?:prices?|rates?|markets?|shares?|stocks?|gold|values?|property|bitcoin)(?: are| is|'s| will)? "
    r"(?:expected|likely|set|bound|sure|certain|going|predicted|forecast) to (?:rise|fall|go up|go down|increase"
    r"|drop|climb|soar|double|recover)\b"
    r"|\b(?:prices?|markets?|shares?|stocks?|gold|property|bitcoin) will (?:definitely |certainly |probably |likely )?"
    r"(?:rise|fall|go up|go down|increase|drop|climb|recover|bounce back)\b"
    r"|\byou should (?:\w+ )?(?:place|put|keep|move|transfer) (?:the proceeds|your (?:money|savings|cash|funds)"
    r"|it all|everything)\b"
)
TAX_LEGAL_ADVICE: Final[str] = _words(
    r"\byou (?:won't|will not|wouldn't|would not|don't|do not) (?:have to |need to |be required to |be liable to )?"
    r"(?:pay|owe) (?:any )?(?:income |capital gains |inheritance )?(?:tax|taxes)\b"
    r"|\b(?:is|are|will be|'s) (?:completely |entirely |totally )?tax[- ](?:free|exempt|deductible)\b"
    r"|\bno tax (?:to pay|is due|will be due|on (?:it|this|that|the|your))\b"
    r"|\byou can (?:avoid|escape|reduce|save on|skip) (?:paying )?(?:\w+ )?tax"
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
    r"|\bharmless\b"
    r"|\b(?:you|you and (?:the|your) baby|(?:the|your) baby)(?:'ll| will| should) be (?:totally |perfectly |completely "
    r"|absolutely |just )?(?:fine|ok|okay|safe|alright|all right)\b"
    r"|\b(?:keep it to|stick to|limit (?:yourself|it) to|no more than|at most|a maximum of|stay under) "
    r"(?:\w+ ){0,3}(?:cups?|shots?|espressos?|coffees|mg|milligrams?)(?: of (?:coffee|caffeine|espresso))?"
    r"(?: (?:a|per) day| daily)\b"
    r"|\b(?:cups?|shots?|mg) (?:a|per) day (?:is|are|should be) (?:perfectly |totally |completely )?"
    r"(?:safe|fine|ok|okay)\b"
    r"|\btake (?:a |an |some )?(?:\w+ )?(?:supplements?|ibuprofen|paracetamol|aspirin|painkillers?|melatonin"
    r"|antacids?|antihistamines?|pills?|tablets?|medication|medicine)\b"
    r"|\b(?:won't|will not|can't|cannot|doesn't|does not) (?:hurt|harm) (?:you|the baby|your baby|your health)\b"
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
#: Talk about its own instructions in the brand's other languages (es, fr, de, pt, it).
#: Talk about its own instructions in other languages (es, fr, de, pt, it): every brand runs them all, since
#: a short reply in a language the brand does not speak is not always judged by the language check.
TRANSLATED: Final[dict[str, str]] = {
    "es": _words(
        r"\bmis (?:instrucciones|indicaciones|reglas|directrices|órdenes) (?:dicen|son|me piden|indican|establecen"
        r"|me dicen|incluyen)\b|\bme (?:han|ha) (?:indicado|configurado|programado|instruido)\b"
        r"|\bestoy (?:configurad[oa]|programad[oa]|instruid[oa]) para\b"
        r"|\bsegún mis (?:instrucciones|reglas|directrices)\b|\bmi (?:prompt|mensaje) (?:del|de) sistema\b"
    ),
    "fr": _words(
        r"\bmes (?:instructions|consignes|règles|directives) (?:disent|sont|me demandent|indiquent|précisent|stipulent"
        r"|prévoient)\b|\bon m'a (?:demandé|configuré|programmé|chargé)\b"
        r"|\bje suis (?:configurée?|programmée?|paramétrée?|censée?) (?:pour|de|à)\b"
        r"|\bselon mes (?:instructions|consignes|règles)\b|\bmon (?:prompt|message) (?:système|initial)\b"
    ),
    "de": _words(
        r"\bmeine (?:anweisungen|anleitungen|regeln|vorgaben|richtlinien|instruktionen) (?:sagen|lauten|besagen|sind"
        r"|verlangen)\b|\bich (?:wurde|bin) (?:angewiesen|programmiert|konfiguriert|instruiert)\b"
        r"|\b(?:laut|gemäß|nach) meinen (?:anweisungen|regeln|vorgaben)\b|\bmein (?:system-?prompt|prompt)\b"
    ),
    "pt": _words(
        r"\bminhas (?:instruções|regras|diretrizes|orientações) (?:dizem|são|pedem|indicam|mandam)\b"
        r"|\bfui (?:instruíd|programad|configurad)[oa]\b|\bestou (?:configurad|programad)[oa] para\b"
        r"|\bde acordo com as minhas (?:instruções|regras)\b"
    ),
    "it": _words(
        r"\ble mie (?:istruzioni|regole|direttive) (?:dicono|sono|chiedono|prevedono)\b"
        r"|\bsono stat[oa] (?:istruit|programmat|configurat)[oa]\b"
    ),
}
TRANSLATED_INSTRUCTIONS: Final[str] = "|".join(TRANSLATED.values())
_FIELD = (
    r"(?:persona|brand|voice|tone|register|formality|languages?|topics|allowed topics|traits|banned phrases|rules"
    r"|dos|don'?ts|fallbacks?|emoji(?: policy)?|sign[- ]off|length|max sentences)"
)
#: A summary of its own set-up: "here's how I'm configured", "config summary", "the text above our
#: chat", "it describes me as …", a listing of the brand file's fields ("persona: …; tone: …").
PERSONA_SUMMARY: Final[str] = _words(
    r"\bhere(?:'s| is) how i(?:'m| am| was|'ve been| have been) (?:configured|set up|programmed|instructed|built"
    r"|designed|prompted|briefed)\b"
    r"|\b(?:config(?:uration)?|setup|set-up|settings|system prompt|persona|prompt) (?:summary|overview|dump|recap)\b"
    r"|\b(?:text|message|instructions?|prompt|notes?|brief) (?:above|before|at the (?:start|top|beginning) of) "
    r"(?:our|this|the) (?:chat|conversation)\b"
    r"|\b(?:it|they|the (?:prompt|instructions|brief|guide|text|notes?)) (?:describes?|defines?|casts?) me as\b"
    r"|\b(?:tells|told|instructs|instructed|reminds) me (?:that )?(?:i(?:'m| am| should| must| have to)|to (?:be|act"
    r"|sound|stay|keep|never|always|avoid|answer|use))\b"
    rf"|\b{_FIELD}\s?[:=]\s?[^\n.;]{{1,80}}[;\n,.]\s?{_FIELD}\s?[:=]"
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
    "bureaucratic": BUREAUCRATIC,
    "condescending": CONDESCENDING,
}
PROMISE: Final[dict[str, str]] = {
    "guarantee": GUARANTEE,
    "invented_offer": INVENTED_OFFER,
    "account_action": ACCOUNT_ACTION,
    "asks_for_secrets": ASKS_FOR_SECRETS,
    "financial_advice": FINANCIAL_ADVICE,
    "tax_legal_advice": TAX_LEGAL_ADVICE,
    "health_advice": HEALTH_ADVICE,
}
META: Final[dict[str, str]] = {
    "instructions": INSTRUCTIONS,
    "configuration": CONFIGURATION,
    "translated_instructions": TRANSLATED_INSTRUCTIONS,
    "persona_summary": PERSONA_SUMMARY,
}

# Every family named in the brand model has a pattern here, and no other.
assert set(TONE) == set(get_args(ToneFamily)), "persona.brand.ToneFamily and TONE disagree"
assert set(PROMISE) == set(get_args(PromiseFamily)), "persona.brand.PromiseFamily and PROMISE disagree"
assert set(META) == set(get_args(MetaFamily)), "persona.brand.MetaFamily and META disagree"

#: Which tone families a register rules out: the markers of the opposite register.
OPPOSITE: Final[dict[str, tuple[str, ...]]] = {
    "formal": ("slang", "chummy"),
    "casual": ("legalese", "corporate", "bureaucratic"),
    "neutral": (),
}
#: Tone families that are off-brand in every register.
EVERY_REGISTER: Final[tuple[str, ...]] = ("condescending",)


def tone_families(brand: Brand) -> list[str]:
    """The tone families that apply to the brand: its register's opposite, and contractions if it forbids them."""
    names = [*OPPOSITE[brand.voice.formality], *EVERY_REGISTER]
    if not brand.voice.contractions:
        names.append("contractions")
    return [n for n in names if n not in brand.guard.tone.off]


#: Tone families of literal phrases: checked as phrases (persona.checks), not as patterns.
PHRASE_FAMILIES: Final[dict[str, tuple[str, ...]]] = {"condescending": CONDESCENDING_PHRASES}


def tone_phrases(brand: Brand) -> list[str]:
    """The literal tone phrases the brand's guard walks in its phrase trie (rule ``tone``)."""
    return [p for n in tone_families(brand) for p in PHRASE_FAMILIES.get(n, ())]


def families(brand: Brand) -> list[Family]:
    """Every family pattern the brand's guard runs (built-in, then its own), in rule order."""
    settings = brand.guard
    out = [Family("tone", TONE[n], negatable=False) for n in tone_families(brand) if n not in PHRASE_FAMILIES]
    out += [Family("tone", f"(?:{p})", negatable=False) for p in settings.tone.patterns]
    out += [Family("promise", rx, True) for n, rx in PROMISE.items() if n not in settings.promises.off]
    out += [Family("promise", f"(?:{p})", True) for p in settings.promises.patterns]
    out += [Family("meta_talk", rx, True) for n, rx in META.items() if n not in settings.meta_talk.off]
    if "persona_summary" not in settings.meta_talk.off and brand.persona_name.strip():
        out.append(Family("meta_talk", persona_talk(brand.persona_name), True))
    out += [Family("meta_talk", f"(?:{p})", True) for p in settings.meta_talk.patterns]
    return out


def persona_talk(name: str) -> str:
    """The persona's own name next to words about its set-up: "Juniper is configured to …", "I'm set up
    as Juniper", "as Juniper, I was told to …" (the ``persona_summary`` family, per brand)."""
    quoted = _words(regex_escape(name.strip()))
    setup = r"(?:configured|set up|instructed|programmed|prompted|briefed|designed|told|supposed|meant|required)"
    return _words(
        rf"\b{quoted}(?:'s)? (?:is |was |has been |gets )?{setup} (?:to|as|by|with)\b"
        rf"|\b{setup} (?:to be|as|to play|to act as) {quoted}\b"
        rf"|\bas {quoted}, i(?:'m| am| was|'ve been| have been) {setup}\b"
    )


def regex_escape(text: str) -> str:
    """``text`` as a literal in a pattern (spaces kept as spaces for :func:`_words`)."""
    return re.escape(text).replace("\\ ", " ")
