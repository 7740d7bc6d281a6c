"""Grounded facts: figures, names and contact details in a reply must come from what it was given.

A reply may restate a fact from its *grounding* — the brand's knowledge, examples and canned replies
(all of it, not only the snippets retrieved for this question: a right figure from another snippet is
still right), plus the question, the retrieved snippets and the recent turns (:class:`GuardContext`).
A fact it states that is not there — an invented price, a shipping time, a rate, a phone number, a
product that does not exist — is an ``unsupported_fact``; the guard withholds it and the reply gets
the brand's ``unsure`` fallback. A reply with no facts ("I don't have the current rate to hand") is
not judged at all: *I don't know* passes, a wrong figure does not.

What is a fact, and how it is normalised so a restatement still matches::

    kind      written                                   normalised key
    ────────  ────────────────────────────────────────  ──────────────────────────────────
    money     $18 · 18 dollars · £25,000 · £25k · 50p   (money, USD, 18.0) …
    percent   4.1% · 4.1 per cent · four percent        (percent, 4.1)
    quantity  3-5 business days · three to five working  (quantity, working_day, 3.0, 5.0)
              days · 24 hours · one day · 15 g · a        (quantity, minute, 1440.0, 1440.0): durations
              three-minute brew · two or four weeks       in minutes, months and years in months, kg in
              (two values) · 1.5 kg                       grams; a single value is also grounded by a
                                                          range that ends on it ("up to 4 working days")
    time      9am · 09:00 · 9 a.m. · 5pm · 17:00 · noon  (time, 540); "5:00" is 5:00 or 17:00
    date      Monday(s) · Monday to Friday · weekends ·   (weekday, monday) · (weekday_range, …): a
              12 March · March 12, 2026 · 2026-03-12      named range or "weekends" grounds each day
                                                          in it · (date, 3, 12, 2026), a date without
                                                          a year matches any year
    phone     0800 123 4567 · +44 800 123 4567            (phone, its last 9 digits)
    email     Hello@Ember.example                         (email, hello@ember.example)
    url       https://www.ember.example/help/             (url, ember.example/help)
    name      Fixed Saver Plus (only "Fixed Saver" exists) a run of capitalised words that uses a
              12 Foundry Lane                              word only the brand's own names use
                                                          (address: (address, 12, foundry lane))

Product and plan names: the brand's *name words* are the words that appear capitalised in its texts
and never in lower case ("Saver", "Yirgacheffe", not "Fixed" — the bank also writes "fixed for 12
months" — nor "Payments"). A run of capitalised words in a reply that contains a name word must be
made of names the grounding has ("Easy Saver", "Meridian" + "Easy Saver"), else it is unsupported:
"Everyday Saver", "Fixed Saver Plus", "Ethiopian Sidamo". A name with no name word ("Premium Gold
Account") is not judged: too many ordinary capitalised words would be false alarms.

Not facts: a number with no unit ("step 2", "in 2024"), ordinal words, a duration written as "a
day", a derived ratio ("1:16.7", "a 1:15 ratio"). A fact the user stated is grounded (the reply may
repeat the customer's order number); that also means a reply may repeat a wrong figure the user
asserted.

Streaming (:class:`FactScanner`): text is read word by word. Ordinary words go straight out; a word
that could start a fact — a digit, a currency sign, a number word, a weekday or month, one of the
brand's name words or an origin ("Saver", "Yirgacheffe", "Kenyan"), ``http``/``www``, an ``@`` — opens
a *region* that is held while the next words could continue the fact (units, "to", "or", "and", "per
cent", "am", more capitalised words), then checked the moment a word that cannot continue it arrives,
and released at once if every fact in it is grounded. The unfinished last word of a piece is held only
while it could still become such a word ("fo" of "four", "1", "Sav"). Other capitalised words ("Sure",
"Ref7", "Fixed") go out at once: they make no name without a name word. The run of them just before a
name word is judged with it ("Everyday Saver" is unsupported, "Fixed Saver" grounded), so such a word
can reach a client before the name it begins is replaced; the name itself never does. Each step looks
at the new text and the open region only (capped at :data:`MAX_REGION` characters), so the cost per
token is flat.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from persona.brand import Brand, per_brand
from persona.checks import NEUTRAL_TERMS, SERVICE_TERMS, Finding
from persona.text import content_terms, split_sentences

ALL_KINDS: tuple[str, ...] = ("money", "percent", "quantity", "time", "date", "phone", "email", "url", "name")
MAX_REGION = 240  # a region (or a word) longer than this is checked as it stands and closed

_NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}  # fmt: skip
# The brand languages' number words, where they cannot be mistaken for an article or an English word
# (no "un", "una", "ein", "once", "elf", "sept"): "dos semanas", "deux jours", "zwei Wochen".
_NUMBER_WORDS_ELSEWHERE: dict[str, int] = {
    "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9, "diez": 10,
    "doce": 12, "catorce": 14, "quince": 15, "veinte": 20, "treinta": 30,
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "huit": 8, "neuf": 9, "dix": 10, "douze": 12,
    "quatorze": 14, "quinze": 15, "vingt": 20, "trente": 30,
    "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7, "acht": 8, "neun": 9, "zehn": 10,
    "zwölf": 12, "vierzehn": 14, "fünfzehn": 15, "zwanzig": 20, "dreißig": 30,
}  # fmt: skip
_NUMBER_WORDS.update(_NUMBER_WORDS_ELSEWHERE)
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_UNITS: dict[str, tuple[str, ...]] = {
    # English first, then Spanish, French and German forms (the languages a brand may answer in).
    "second": ("seconds", "second", "secs", "sec", "segundos", "secondes", "sekunden"),
    "minute": ("minutes", "minute", "mins", "min", "minutos", "minuto", "minuten"),
    "hour": ("hours", "hour", "hrs", "hr", "horas", "hora", "heures", "heure", "stunden", "stunde"),
    "working_day": (
        "business days",
        "business day",
        "working days",
        "working day",
        "banking days",
        "banking day",
        "días hábiles",
        "dias habiles",
        "días laborables",
        "dias laborables",
        "jours ouvrés",
        "jours ouvrables",
        "werktage",
        "werktagen",
        "arbeitstage",
        "arbeitstagen",
    ),
    "day": ("days", "day", "días", "dias", "día", "dia", "jours", "jour", "tage", "tagen", "tag"),
    "week": ("weeks", "week", "semanas", "semana", "semaines", "semaine", "wochen", "woche"),
    "month": ("months", "month", "meses", "mes", "mois", "monate", "monaten", "monat"),
    "year": ("years", "year", "años", "año", "années", "année", "jahre", "jahren", "jahr"),
    "gram": ("grams", "gram", "g", "gramos", "gramo", "grammes", "gramme", "gramm"),
    "kilogram": ("kilograms", "kilogram", "kilos", "kilo", "kg"),
    "ounce": ("ounces", "ounce", "oz"),
    "pound_weight": ("lbs", "lb"),
    "millilitre": ("millilitres", "milliliters", "millilitre", "milliliter", "ml", "mililitros"),
    "litre": ("litres", "liters", "litre", "liter", "litros", "litro"),
    "cup": ("cups", "cup", "tazas", "taza", "tasses", "tasse", "tassen"),
    "bag": ("bags", "bag", "bolsas", "bolsa", "sachets", "sachet", "beutel", "tüten", "tüte"),
    "degree": ("degrees", "degree", "°c", "°f"),
    "mile": ("miles", "mile"),
    "kilometre": ("kilometres", "kilometers", "km"),
}
# Units that convert exactly are compared in one base unit (durations in minutes, months and years
# in months, weights in grams, volumes in millilitres); working days, ounces, cups … stay as they are.
_BASE_UNIT: dict[str, tuple[str, float]] = {
    "second": ("minute", 1 / 60), "minute": ("minute", 1.0), "hour": ("minute", 60.0), "day": ("minute", 1440.0),
    "week": ("minute", 10080.0), "month": ("month", 1.0), "year": ("month", 12.0), "gram": ("gram", 1.0),
    "kilogram": ("gram", 1000.0), "millilitre": ("millilitre", 1.0), "litre": ("millilitre", 1000.0),
}  # fmt: skip
_UNIT_OF = {form: unit for unit, forms in _UNITS.items() for form in forms}
_CURRENCY = {
    "$": "USD", "£": "GBP", "€": "EUR", "usd": "USD", "gbp": "GBP", "eur": "EUR", "dollar": "USD",
    "dollars": "USD", "bucks": "USD", "pound": "GBP", "pounds": "GBP", "quid": "GBP", "euro": "EUR",
    "euros": "EUR", "cent": "USD", "cents": "USD", "pence": "GBP", "p": "GBP",
    "dólares": "USD", "dolares": "USD", "dólar": "USD", "dolar": "USD", "libras": "GBP", "libra": "GBP",
    "livres": "GBP", "livre sterling": "GBP", "pfund": "GBP",
}  # fmt: skip
# The currency words of other languages, and a sign written after the amount ("35 $", "18,50 €").
_CURRENCY_AFTER = ("dólares", "dolares", "dólar", "dolar", "libras", "libra", "livres", "pfund", "€", "$", "£")
_MULTIPLIER = {"k": 1_000, "thousand": 1_000, "m": 1_000_000, "million": 1_000_000, "bn": 10**9, "billion": 10**9}
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
_MONTH_OF = (
    {m.lower(): i for i, m in enumerate(_MONTHS, 1)}
    | {m[:3].lower(): i for i, m in enumerate(_MONTHS, 1) if m != "May"}
    | {"sept": 9}
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _alternation(forms: Iterable[str]) -> str:
    return "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in sorted(forms, key=len, reverse=True))


# Below a hundred: "twenty-four", "fifteen"; then "two hundred and fifty", "a hundred" left as "hundred".
_SMALLNUM = rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:one|two|three|four|five|six|seven|eight|nine)(?![a-z]))?|{_alternation(w for w in _NUMBER_WORDS if w not in _TENS and w != 'hundred')})(?![a-z])"  # noqa: E501
_WORDNUM = rf"(?:(?:{_SMALLNUM}\s+)?hundred(?:\s+(?:and\s+)?{_SMALLNUM})?(?![a-z])|{_SMALLNUM})"
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+,\d{1,2}(?!\d)|\d+(?:\.\d+)?"  # "18,50": a decimal comma
_NUM = rf"(?:{_DIGITS}|{_WORDNUM})"
_MONTH = rf"(?-i:{_alternation([*_MONTHS, *(m[:3] for m in _MONTHS if m != 'May'), 'Sept'])})\.?"
_END = r"(?![\w'\u2019])"

# One pattern, alternatives in priority order: at each position the first that matches wins, and
# what it consumes no later alternative sees ("£25,000" is money, not a bare number and a phone).
_FACT = re.compile(
    rf"""(?<![\w'\u2019@/.,])(?:
      (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
    | (?P<url>(?:https?://|www\.)[^\s<>()"']+)
    | (?P<iso>\d{{4}})-(?P<isom>\d{{2}})-(?P<isod>\d{{2}})(?!\d)
    | (?P<dd>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<dmon>{_MONTH})(?:,?\s+(?P<dy>\d{{4}}))?{_END}
    | (?P<dmon2>{_MONTH})\s+(?P<dd2>\d{{1,2}})(?:st|nd|rd|th)?(?!\d)(?:,?\s+(?P<dy2>\d{{4}}))?{_END}
    | (?P<sd>\d{{1,2}})/(?P<sm>\d{{1,2}})/(?P<sy>\d{{2,4}})(?!\d)
    | (?=(?:[\s.()+-]*\d){{7}})
      (?P<phone>(?:\+\d{{1,3}}[\s.-]?)?(?:\(\d{{2,5}}\)[\s.-]?)?\d{{2,5}}(?:[\s.-]\d{{2,5}}){{1,4}})(?!\d|[.,]\d)
    | (?P<ratio>\d+(?:\.\d+)?\s?:\s?\d+\.\d+|\d+\s?:\s?\d+(?=\s+ratio))
    | (?P<th>\d{{1,2}})(?:[:.](?P<tm>\d{{2}}))?\s?(?P<tap>[ap])\.?\s?m\.?(?!\w)
    | (?P<uh>\d{{1,2}})(?:[:.](?P<um>\d{{2}}))?\s?(?-i:Uhr){_END}
    | (?P<hh>\d{{1,2}})\s?h(?:\s?(?P<hm>\d{{2}}))?{_END}
    | (?P<t2h>\d{{1,2}}):(?P<t2m>\d{{2}})(?!\d|\.\d)
    | (?P<tn>noon|midday|midnight){_END}
    | (?P<cur>[$£€])\s?(?P<ma>{_DIGITS})(?:\s?(?P<mm>k|m|bn|thousand|million|billion){_END})?
    | (?P<mc>USD|GBP|EUR)\s?(?P<md>{_DIGITS})
    | (?P<pence>\d+)p{_END}
    | (?P<mb>{_NUM})(?:\s?(?P<mm2>k|thousand|million|billion))?\s*
      (?P<cw>dollars?|bucks|pounds?|quid|euros?|cents?|pence|usd|gbp|eur|{_alternation(_CURRENCY_AFTER)})(?![\w'\u2019])
    | (?P<pa>{_NUM})\s?(?:%|per\s?cent{_END}|percent{_END}|por\s+ciento{_END}|pour\s+cent{_END}|prozent{_END})
    | (?:between\s+)?(?P<qa>{_NUM})(?:\s*(?P<qsep>-|\u2013|\u2014|to|or|and)\s*(?P<qb>{_NUM}))?
      (?:\s*-\s*|\s*)(?P<qu>{_alternation(_UNIT_OF)}){_END}
    | (?P<freq>every\s+(?:other\s+)?(?P<fu>week|fortnight|month|year){_END}
      |(?P<fa>weekly|fortnightly|monthly|quarterly|annually|yearly){_END})
    | (?P<an>\d{{1,5}})\s+
      (?P<ast>(?-i:(?:[A-Z][a-z]+\s+){{0,3}}(?:Lane|Street|St|Road|Rd|Avenue|Ave|Way|Square|Place|Drive|Court|Boulevard)))(?!\w)
    | (?P<week>weekdays?|weekends?){_END}
    | (?P<wd>(?-i:{"|".join(_WEEKDAYS)}))s?
      (?:\s*(?:-|\u2013|to|through|until)\s*(?P<wd2>(?-i:{"|".join(_WEEKDAYS)}))s?)?{_END}
    | (?P<bare>{_DIGITS})
    )""",
    re.IGNORECASE | re.VERBOSE,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact as written (``text``), with the keys that ground it (any one will do) and the
    category a different value of it would contradict."""

    kind: str
    text: str
    keys: tuple[tuple[object, ...], ...]
    category: tuple[object, ...]


def number(text: str) -> float:
    """``"25,000"`` → 25000.0, ``"twenty-four"`` → 24.0, ``"two hundred and fifty"`` → 250.0."""
    text = text.lower()
    if text[0].isdigit():
        if re.fullmatch(r"\d+,\d{1,2}", text):  # "18,50" (a decimal comma), not "18,500"
            return float(text.replace(",", "."))
        return float(text.replace(",", ""))
    value = 0
    for word in re.split(r"[\s-]+", text):
        if word == "hundred":  # "two hundred and fifty": what came before it, times a hundred
            value = max(value, 1) * 100
        elif word in _NUMBER_WORDS:  # "and" and empty pieces add nothing
            value += _NUMBER_WORDS[word]
    return float(value)


def _money(kind_text: str, currency: str, amount: float) -> Fact:
    amount = round(amount, 4)
    return Fact("money", kind_text, (("money", currency, amount),), ("money", currency))


# How often, in the base units of _BASE_UNIT: "weekly", "every month", "every other week". Not "daily" or
# "every day": those are more often the customer's habit ("if you brew daily") than a fact of the brand.
_FREQUENCY: dict[str, tuple[str, float]] = {
    "day": ("minute", 1440.0), "daily": ("minute", 1440.0), "week": ("minute", 10080.0), "weekly": ("minute", 10080.0),
    "fortnight": ("minute", 20160.0), "fortnightly": ("minute", 20160.0), "month": ("month", 1.0),
    "monthly": ("month", 1.0), "quarterly": ("month", 3.0), "year": ("month", 12.0), "annually": ("month", 12.0),
    "yearly": ("month", 12.0),
}  # fmt: skip


def _quantity(text: str, unit: str, lo: float, hi: float, every: bool = False) -> Fact:
    base, factor = _BASE_UNIT.get(unit, (unit, 1.0))  # "two weeks" is "14 days", "one year" "12 months"
    nlo, nhi = round(lo * factor, 4), round(hi * factor, 4)
    keys: list[tuple[object, ...]] = [("quantity", base, nlo, nhi)]
    if every and lo == hi:
        keys.append(("frequency", base, nlo))
    if lo == hi:  # a single value: also an end of a range ("up to four working days")
        keys.append(("quantity_end", base, nlo))
        if unit == "day":  # "3 days" restates "three working days"
            keys += [("quantity", "working_day", lo, hi), ("quantity_end", "working_day", lo)]
    return Fact("quantity", text, tuple(keys), ("quantity", base))


def _time(text: str, minutes: int, ambiguous: bool = False) -> Fact:
    keys: list[tuple[object, ...]] = [("time", minutes % 1440)]
    if ambiguous and minutes < 12 * 60:
        keys.append(("time", minutes + 12 * 60))
    return Fact("time", text, tuple(keys), ("time",))


def _date(text: str, month: int, day: int, year: int) -> Fact:
    keys: tuple[tuple[object, ...], ...] = (("date", month, day, year), ("date", month, day, 0))
    return Fact("date", text, keys, ("date",))


def _year(text: str | None) -> int:
    if not text:
        return 0
    year = int(text)
    return year + 2000 if year < 100 else year


_EVERY = re.compile(r"(?<![\w'\u2019])(?:every|cada|alle|tous\s+les|toutes\s+les)\s+\Z", re.IGNORECASE)


def extract(text: str) -> Iterator[Fact]:
    """The facts in ``text`` (names excepted: see :class:`Names`)."""
    for m in _FACT.finditer(text):
        g = m.groupdict()
        written = m.group(0)
        if g["email"]:
            yield Fact("email", written, (("email", written.lower()),), ("email",))
        elif g["url"]:
            url = re.sub(r"^(?:https?://)?(?:www\.)?", "", written.lower().rstrip(".,;:!?'\"")).rstrip("/")
            yield Fact("url", written, (("url", url),), ("url",))
        elif g["iso"]:
            yield _date(written, int(g["isom"]), int(g["isod"]), int(g["iso"]))
        elif g["dmon"] or g["dmon2"]:
            month = _MONTH_OF[(g["dmon"] or g["dmon2"]).rstrip(".").lower()]
            yield _date(written, month, int(g["dd"] or g["dd2"]), _year(g["dy"] or g["dy2"]))
        elif g["sd"]:  # d/m/y as written: 12/03/2026 and 3/12/2026 are different facts
            yield _date(written, int(g["sm"]), int(g["sd"]), _year(g["sy"]))
        elif g["phone"]:
            digits = re.sub(r"\D", "", written)
            yield Fact("phone", written, (("phone", digits[-9:]),), ("phone",))
        elif g["ratio"]:
            continue  # a ratio is derived ("1:16.7" from 15 g to 250 g): consumed, not judged
        elif g["th"]:
            hour = int(g["th"]) % 12 + (12 if g["tap"].lower() == "p" else 0)
            yield _time(written, hour * 60 + int(g["tm"] or 0))
        elif g["uh"]:  # "16 Uhr", "16.30 Uhr": the 24-hour clock
            hour, minute = int(g["uh"]), int(g["um"] or 0)
            if hour < 24 and minute < 60:
                yield _time(written, hour * 60 + minute)
        elif g["hh"]:  # "16 h", "16h30": a clock time in French or Spanish, or "24 h", a duration
            hour, minute = int(g["hh"]), int(g["hm"] or 0)
            keys: list[tuple[object, ...]] = [("quantity", "minute", hour * 60.0, hour * 60.0)] if not g["hm"] else []
            if hour <= 24 and minute < 60:
                keys.append(("time", (hour * 60 + minute) % 1440))
            yield Fact("time", written, tuple(keys), ("time",))
        elif g["t2h"]:
            hour, minute = int(g["t2h"]), int(g["t2m"])
            if hour < 24 and minute < 60:
                yield _time(written, hour * 60 + minute, ambiguous=0 < hour < 12)
        elif g["tn"]:
            yield _time(written, 0 if g["tn"].lower() == "midnight" else 720)
        elif g["cur"]:
            amount = number(g["ma"]) * _MULTIPLIER.get((g["mm"] or "").lower(), 1)
            yield _money(written, _CURRENCY[g["cur"]], amount)
        elif g["mc"]:
            yield _money(written, g["mc"].upper(), number(g["md"]))
        elif g["pence"]:
            yield _money(written, "GBP", int(g["pence"]) / 100)
        elif g["mb"]:
            word = g["cw"].lower()
            amount = number(g["mb"]) * _MULTIPLIER.get((g["mm2"] or "").lower(), 1)
            yield _money(written, _CURRENCY[word], amount / 100 if word in ("cent", "cents", "pence") else amount)
        elif g["pa"]:
            value = round(number(g["pa"]), 4)
            yield Fact("percent", written, (("percent", value),), ("percent",))
        elif g["qa"]:
            unit = _UNIT_OF[re.sub(r"\s+", " ", g["qu"].lower())]
            lo = number(g["qa"])
            sep = (g["qsep"] or "").lower()
            every = _EVERY.search(text, 0, m.start()) is not None  # "every two weeks" / "cada dos semanas"
            if not g["qb"]:
                yield _quantity(written, unit, lo, lo, every)
            elif sep in ("or", "and") and not written.lower().startswith("between"):
                yield _quantity(written, unit, lo, lo, every)
                yield _quantity(written, unit, number(g["qb"]), number(g["qb"]), every)
            else:
                yield _quantity(written, unit, lo, number(g["qb"]))
        elif g["freq"]:
            word = (g["fu"] or g["fa"]).lower()
            base, value = _FREQUENCY[word]
            value *= 2 if "other" in written.lower() else 1
            yield Fact("quantity", written, (("frequency", base, value),), ("frequency", base))
        elif g["an"]:
            street = " ".join(g["ast"].lower().split())
            yield Fact("name", written, (("address", int(g["an"]), street),), ("address",))
        elif g["week"]:
            span = (
                ("weekday_range", "monday", "friday")
                if g["week"][4] in "dD"
                else ("weekday_range", "saturday", "sunday")
            )
            yield Fact("date", written, (span,), ("weekday",))
        elif g["wd2"]:
            span = ("weekday_range", g["wd"].lower(), g["wd2"].lower())
            yield Fact("date", written, (span,), ("weekday",))
        elif g["wd"]:
            yield Fact("date", written, (("weekday", g["wd"].lower()),), ("weekday",))


# --- names ------------------------------------------------------------------------------------------

# Capitalised words that are never part of a product name (sentence starters, pronouns, greetings):
# released as soon as they are complete, and cut out of a run of capitalised words.
_STOP_CAPS = """
    the a an our your their its his her my this that these those we i you he she it they if for and but
    or so yes no not please thanks thank hi hey hello sure absolutely of in on at to with from by as is
    are was when what where which who how why there here then also just every each all any some both
    good great oh ok okay sorry let i'm i'll i'd i've we're we'll we've you're you'll you've it's that's
    there's here's what's do does did can could would should will unfortunately however once while since
    because until after before most many more dear welcome happy glad certainly of course note
    le la les un une des du de notre nos votre vos el los las nuestro nuestra nuestros su sus tu il lo gli
    una der die das ein eine einen unser unsere unseren ihr ihre o os as um uma nosso nossa
"""
STOP_CAPS = frozenset(_STOP_CAPS.split())
_NAME_RUN = re.compile(r"(?<![\w'\u2019])(?-i:[A-Z][\w'\u2019]*(?:(?:\s+&)?[ \t]+[A-Z][\w'\u2019]*)*)")
_NAME_WORD = re.compile(r"[A-Za-z][\w'\u2019]*")
_CALENDAR = frozenset(w.lower() for w in (*_WEEKDAYS, *_MONTHS)) | frozenset(f"{w.lower()}s" for w in _WEEKDAYS)


def _norm(word: str) -> str:
    word = word.lower().replace("\u2019", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def name_runs(text: str) -> Iterator[tuple[str, tuple[str, ...], bool]]:
    """Runs of capitalised words in ``text``, split at function words and calendar words:
    ``(as written, normalised words, starts a sentence)``."""
    for m in _NAME_RUN.finditer(text):
        j = m.start() - 1
        while j >= 0 and text[j] in " \t":
            j -= 1
        initial = j < 0 or text[j] in '.!?:\n"\u201c('
        part: list[str] = []
        for word in _NAME_WORD.findall(m.group(0)):
            low = word.lower().replace("\u2019", "'")
            if low in STOP_CAPS or low in _CALENDAR or not word[0].isupper():
                if part:
                    yield " ".join(part), tuple(_norm(w) for w in part), initial
                part, initial = [], False
                continue
            part.append(word)
        if part:
            yield " ".join(part), tuple(_norm(w) for w in part), initial


def _lowercase_words(texts: Iterable[str]) -> frozenset[str]:
    return frozenset(_norm(w) for t in texts for w in _NAME_WORD.findall(t) if w[0].islower())


def _subruns(runs: Iterable[tuple[str, ...]]) -> frozenset[tuple[str, ...]]:
    return frozenset(run[i:j] for run in runs for i in range(len(run)) for j in range(i + 1, len(run) + 1))


# Coffee-, tea- and cocoa-growing countries, regions and their adjectives: a capitalised name with one of
# these ("Kenyan AA", "Guatemalan Antigua", "Sumatra Mandheling") presents an origin as a product.
_ORIGINS = frozenset(
    _norm(_w)
    for _w in """
    Ethiopia Ethiopian Kenya Kenyan Colombia Colombian Brazil Brazilian Guatemala Guatemalan Honduras Honduran
    Nicaragua Nicaraguan Salvador Salvadoran Panama Panamanian Mexico Mexican Peru Peruvian Bolivia Bolivian
    Ecuador Ecuadorian Rwanda Rwandan Burundi Burundian Tanzania Tanzanian Uganda Ugandan Yemen Yemeni India
    Indian Indonesia Indonesian Sumatra Sumatran Java Javanese Sulawesi Papua Vietnam Vietnamese Jamaica
    Jamaican Hawaii Hawaiian Kona Rica Rican Congo Congolese Malawi Malawian Zambia Zambian Cuba Cuban Haiti
    Haitian Dominican Venezuela Venezuelan Laos Thai Myanmar Timor Ghana Ivory Sidamo Harrar Huehuetenango
    Antigua Tarrazu Nyeri Kiambu Cauca Narino Nariño Huila Chiapas Veracruz Oaxaca Cerrado Sul Minas Bourbon
    Geisha Gesha Typica Caturra Pacamara Mandheling Toraja
    """.split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Grounding:
    """What a reply may state: fact keys, their categories, and the names it may use."""

    keys: frozenset[tuple[object, ...]]
    categories: frozenset[tuple[object, ...]]
    names: frozenset[tuple[str, ...]]  # every contiguous part of every known name
    name_words: frozenset[str]  # words only the brand's names use (never written in lower case)
    plain_words: frozenset[str] = frozenset()  # words the brand writes in lower case ("press", "coffee")
    # Quantities and frequencies the brand states only about something: key → the topic words of each
    # sentence that states it (its words, the snippet's topic and keywords, the example's question).
    bound: tuple[tuple[tuple[object, ...], frozenset[str]], ...] = ()
    subjects: tuple[frozenset[str], ...] = ()  # the topic words of each snippet and example

    def unbound(self, fact: Fact, terms: frozenset[str], reply: frozenset[str] | None = None) -> bool:
        """Whether ``fact`` is grounded only by knowledge about something else: every key of it that the
        grounding has is bound to sentences that share no topic word with ``terms`` (the reply's)."""
        found = [key for key in fact.keys if key in self.keys]
        if not found or not self.bound:
            return False
        topics: dict[tuple[object, ...], list[frozenset[str]]] = {}
        for key, words_ in self.bound:
            topics.setdefault(key, []).append(words_)
        if not all(key in topics and not any(t & terms for t in topics[key]) for key in found):
            return False
        # ... and the reply itself (``reply``, else ``terms``) is about another part of the knowledge: without
        # such evidence ("Within three working days.") it is not judged; the question alone is not enough
        # ("How often does it ship?" of the subscription).
        evidence = terms if reply is None else reply
        return any(t & evidence for t in self.subjects)

    def verdict(self, fact: Fact) -> str | None:
        """None when grounded; else ``contradicts`` (the grounding has a different value of the same
        kind and unit) or ``unsupported``."""
        if any(key in self.keys for key in fact.keys):
            return None
        return "contradicts" if fact.category in self.categories else "unsupported"

    def name_verdict(self, words: tuple[str, ...]) -> str | None:
        """A run of capitalised words: None when it uses no name word or is made of known names."""
        others = [w for w in words if w not in _ORIGINS]
        # "Kenyan AA", "Guatemalan Antigua"; not "Colombian Coffee" (an origin and the brand's own words)
        origin = (
            len(words) > 1 and len(others) < len(words) and not (others and all(w in self.plain_words for w in others))
        )
        if not origin and not any(w in self.name_words for w in words):
            return None
        # Made of known names end to end ("Meridian" + "Easy Saver"), at most a few words long.
        reach = [True] + [False] * len(words)
        for i in range(len(words)):
            if reach[i]:
                for j in range(i + 1, len(words) + 1):
                    if words[i:j] in self.names:
                        reach[j] = True
        return None if reach[-1] else "unsupported"

    def merged(self, texts: Sequence[str]) -> Grounding:
        """This grounding plus the facts and names in ``texts`` (the question, retrieved snippets,
        recent turns); name words stay the brand's."""
        parts = [_text_grounding(t) for t in texts]
        return Grounding(
            self.keys.union(*(p[0] for p in parts)),
            self.categories.union(*(p[1] for p in parts)),
            self.names.union(*(p[2] for p in parts)),
            self.name_words,
            self.plain_words,
        )


@functools.lru_cache(maxsize=2048)
def _text_grounding(
    text: str,
) -> tuple[frozenset[tuple[object, ...]], frozenset[tuple[object, ...]], frozenset[tuple[str, ...]]]:
    """The fact keys, categories and name parts one text grounds; cached, as the retrieved snippets and
    recent turns come back reply after reply (extracting them was ~5 % of a server's CPU)."""
    facts = list(extract(text))
    runs = [words for _, words, _ in name_runs(text)]
    return _keys(facts), frozenset(f.category for f in facts), _subruns(runs)


def _keys(facts: Iterable[Fact]) -> frozenset[tuple[object, ...]]:
    keys: set[tuple[object, ...]] = set()
    for fact in facts:
        keys.update(fact.keys[:1])
        keys.update(k for k in fact.keys[1:] if k[0] == "frequency")
        key = fact.keys[0]
        if key[0] == "quantity" and key[2] != key[3]:  # a range grounds its ends as single values
            keys.update({("quantity_end", key[1], key[2]), ("quantity_end", key[1], key[3])})
        if key[0] == "weekday_range" and not fact.text.lower().startswith("weekday"):
            # "Monday to Friday" and "weekends" ground each day in them; "weekdays" (the cafe's hours)
            # grounds "Monday to Friday" but not a single day: "we roast on Tuesdays" needs its own fact.
            days = [d.lower() for d in _WEEKDAYS]
            a, b = days.index(str(key[1])), days.index(str(key[2]))
            keys.update(("weekday", days[i % 7]) for i in range(a, a + (b - a) % 7 + 1))
        if key[0] == "date":
            keys.add(fact.keys[1])  # a dated fact grounds the same day without a year
    return frozenset(keys)


def brand_texts(brand: Brand) -> tuple[str, ...]:
    """Everything the brand itself says: what a reply may restate."""
    f = brand.fallbacks
    return (
        brand.name,
        brand.persona_name,
        brand.instructions,
        brand.greeting,
        brand.no_match,
        *(s.text for s in brand.knowledge),
        *(e.assistant for e in brand.examples),
        *(t for t in (f.off_topic, f.off_brand, f.error, f.truncated, f.unsure) if t),
    )


@functools.lru_cache(maxsize=64)
def _brand_grounding(texts: tuple[str, ...], proper: tuple[str, ...]) -> Grounding:
    facts = [f for t in texts for f in extract(t)]
    runs = [words for t in texts for _, words, initial in name_runs(t) if len(words) > 1 or not initial]
    brand_runs = [words for t in proper for _, words, _ in name_runs(t)]
    # The brand's and persona's own names are known names but not name words: "Meridian Online
    # Banking" is the bank's wording, not an invented product; "Meridian Easy Saver Plus" still is.
    lower = _lowercase_words(texts) | {w for run in brand_runs for w in run}
    name_words = frozenset(w for run in runs for w in run if w not in lower and not w.isdigit())
    runs += brand_runs
    plain = _lowercase_words(texts)
    return Grounding(_keys(facts), frozenset(f.category for f in facts), _subruns(runs), name_words, plain)


_BINDABLE = ("quantity", "quantity_end", "frequency")


def topic_terms(text: str) -> frozenset[str]:
    """The words of ``text`` that say what it is about (no units, calendar or generic words)."""
    return frozenset(t for t in content_terms(text) if t not in NEUTRAL_TERMS)


@functools.lru_cache(maxsize=64)
def _bindings(
    sources: tuple[tuple[str, str], ...], topics: int
) -> tuple[tuple[tuple[object, ...], frozenset[str]], ...]:
    """``sources``: (text, what it is about) for each knowledge snippet and example: every quantity or
    frequency a sentence of them states, with the sentence's topic words (once per brand version; the
    ones stated anywhere else too are taken out per reply, :func:`grounding`). The first ``topics``
    sources are the knowledge snippets, one topic each (the examples repeat their topics)."""
    # Words of more than one source ("bag", "beans" for a roaster) say nothing about which it is.
    spread: dict[str, int] = {}
    for text, about in sources[:topics]:
        for term in topic_terms(text) | topic_terms(about):
            spread[term] = spread.get(term, 0) + 1
    out: list[tuple[tuple[object, ...], frozenset[str]]] = []
    for text, about in sources:
        extra = topic_terms(about)
        for sentence in split_sentences(text):
            keys = {k for k in _keys(extract(sentence)) if k[0] in _BINDABLE}
            if keys:
                words_ = frozenset(t for t in topic_terms(sentence) | extra if spread.get(t, 0) <= 1)
                out += [(k, words_) for k in sorted(keys, key=repr)]
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _subjects(sources: tuple[tuple[str, str], ...]) -> tuple[frozenset[str], ...]:
    """Each knowledge snippet's topic words that no other snippet has."""
    # (customer-service words, "order", "account", "phone", are every topic's: no evidence of one)
    sets = [(topic_terms(text) | topic_terms(about)) - SERVICE_TERMS for text, about in sources]
    return tuple(t - frozenset().union(*(o for j, o in enumerate(sets) if j != i)) for i, t in enumerate(sets))


@dataclass(frozen=True)
class _BrandPart:
    """What :func:`grounding` takes from the brand alone (computed once per brand object)."""

    base: Grounding
    known: frozenset[str]  # the knowledge's and examples' texts
    free: frozenset[tuple[object, ...]]  # the fact keys the brand's other texts state
    bindings: tuple[tuple[tuple[object, ...], frozenset[str]], ...]
    subjects: tuple[frozenset[str], ...]


@per_brand
def _brand_part(brand: Brand) -> _BrandPart:
    texts = brand_texts(brand)
    base = _brand_grounding(texts, (brand.name, brand.persona_name))
    sources = [(s.text, " ".join([s.topic, *s.keywords])) for s in brand.knowledge]
    sources += [(e.assistant, " ".join([e.user, *e.tags])) for e in brand.examples]
    known = frozenset(text for text, _ in sources)
    free = frozenset().union(*(_text_grounding(t)[0] for t in texts if t and t not in known))
    return _BrandPart(
        base,
        known,
        free,
        _bindings(tuple(sources), len(brand.knowledge)),
        _subjects(tuple(sources[: len(brand.knowledge)])),
    )


def grounding(brand: Brand, context: Sequence[str] = (), question: str = "") -> Grounding:
    """The brand's grounding (computed once per brand version) plus ``context`` (and ``question``),
    with the quantities its knowledge and examples state bound to what they are about."""
    part = _brand_part(brand)
    # A quantity stated anywhere else the brand speaks, or in the question or context, is not bound.
    known = part.known
    free = part.free.union(*(_text_grounding(t)[0] for t in (question, *context) if t and t not in known))
    bound = tuple(b for b in part.bindings if b[0] not in free)
    texts = [t for t in (question, *context) if t]
    merged = part.base.merged(texts) if texts else part.base
    return dataclasses.replace(merged, bound=bound, subjects=part.subjects)


def unsupported(
    text: str,
    ground: Grounding,
    kinds: frozenset[str] = frozenset(ALL_KINDS),
    *,
    lead: str = "",
    extracted: Sequence[Fact] | None = None,
) -> list[Fact]:
    """The facts in ``text`` (a whole reply, or a region of one) its grounding does not support.
    ``lead``: the capitalised words just before the region (already out), judged with a name it opens.
    ``extracted``: ``list(extract(text))``, when the caller has it already."""
    facts = extract(text) if extracted is None else extracted
    found = [f for f in facts if f.kind in kinds and ground.verdict(f) is not None]
    if "name" in kinds:
        for written, words, _ in name_runs(lead + text if lead else text):
            if ground.name_verdict(words) is not None:
                found.append(Fact("name", written, (("name", *words),), ("name",)))
    return found


# --- streaming --------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\S+|\s+")
_DIGIT_OR_AT = re.compile(r"[\d@]")
# Inside a word, what still makes it a possible fact: an email's "@", a figure after a hyphen ("mid-2025").
# A figure glued after letters ("word0", "X1", "mp3") is not one: such tokens do not hold the reply.
_INNER_TRIGGER = re.compile(r"@|-\d")
_SIMPLE = re.compile(r"(\s*)[a-z]+")
_SPACE = re.compile(r"\s")
_WEB = re.compile(r"https?:|www\.", re.IGNORECASE)
_LEAD = "(\"'\u201c\u2018[*_"
_TRAIL = ".,;:!?)\"'\u201d\u2019]*_"
_CLAUSE_END = frozenset(".,;:!?)")
_TRIGGER_CHARS = frozenset("0123456789$£€+#")
_FREQUENCY_WORDS = frozenset(("every", "weekly", "fortnightly", "monthly", "quarterly", "annually", "yearly"))
_CONTINUE = frozenset(
    [*_UNIT_OF, "business", "working", "banking", "to", "or", "and", "other", "fortnight", *_FREQUENCY_WORDS,
     "-", "\u2013", "\u2014", "between", "per", "cent",
     "percent", "am", "pm", "a.m.", "p.m.", "a.m", "p.m", "noon", "midday", "midnight", "o'clock", "&",
     "thousand", "million", "billion", "k", "bn", "dollars", "dollar", "pounds", "pound", "euros", "euro",
     "pence", "cents", "cent", "quid", "bucks", "uhr", "h", "por", "ciento", "pour", "prozent", "cada", "alle",
     "tous", "toutes", "les", "a", "à", "de", "bis", "y", "et", "und", "o", "ou", "oder",
     *(word for form in _UNIT_OF for word in form.split()), *_CURRENCY_AFTER]
)  # fmt: skip
_CONTINUE_PREFIXES = frozenset(w[:i] for w in _CONTINUE for i in range(1, len(w) + 1))
# Lower-case words that open a region: number words and frequencies ("every week", "monthly").
_LOWER_TRIGGERS = frozenset(_NUMBER_WORDS) | _FREQUENCY_WORDS
_PREFIXES = frozenset(w[:i] for w in (*_LOWER_TRIGGERS, "http", "https", "www") for i in range(1, len(w) + 1))
_CAL_PREFIXES = frozenset(w[:i] for w in _CALENDAR for i in range(1, len(w) + 1))


@functools.lru_cache(maxsize=64)
def _name_openers(name_words: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The words that open a name region (the brand's name words and the origins), and their prefixes."""
    words = name_words | _ORIGINS
    return words, frozenset(w[:i] for w in words for i in range(1, len(w) + 1))


_SENTENCE_BREAK = re.compile(r"[.!?\u2026]+[\"')\]]*\s+|\n")
_ABOUT_CHARS = 200  # the reply text before a quantity (its sentence, roughly) that says what it is about


class FactScanner:
    """Holds a reply's possible facts while they are written; reports the first ungrounded one.

    ``feed(text, at)`` takes the next raw text starting at raw offset ``at``; :meth:`held_from` is the
    offset from which text must not go out yet; :meth:`finish` checks what is open at the end.
    With ``hold=False`` (``guard.facts.action: log``) nothing is held: findings are only reported.
    """

    def __init__(self, ground: Grounding, kinds: Iterable[str], *, hold: bool = True, question: str = "") -> None:
        self.ground = ground
        self._question_terms = topic_terms(question) if ground.bound else frozenset()
        self._recent_text = ""  # the last characters of the reply: what a quantity in it is about
        self._bound_keys = frozenset(key for key, _ in ground.bound)
        self.kinds = frozenset(kinds)
        self.hold = hold
        self.names = "name" in self.kinds and bool(ground.name_words)
        self._name_words, self._name_prefixes = _name_openers(ground.name_words)
        self.calendar = "date" in self.kinds
        # The run of capitalised words just before the current word (out already: a capitalised word
        # opens a region only if it is a name word or an origin), judged with a name that follows it:
        # "Fixed Saver Plus" holds from "Saver" and is judged as a whole.
        self._lead: list[str] = []
        self._region_lead = ""
        self._tail = ""  # raw text from `_tail_at`: the open region and the unfinished word
        self._tail_at = 0
        self._region_at: int | None = None
        self._word_at: int | None = None  # the unfinished last word (no whitespace after it yet)
        self._word_holds = False  # it could still become a word that opens a region

    def feed(self, text: str, at: int) -> Finding | None:
        if self.ground.bound:
            self._recent_text = (self._recent_text + text)[-_ABOUT_CHARS:]
        simple = _SIMPLE.fullmatch(text) if self._region_at is None else None
        if simple is not None:  # the common token, " word": no fact under way, nothing to scan
            lead = simple.end(1)
            if lead and self._word_at is not None:
                found = self._end_word(at)
                if found is not None:
                    return found
            if self._region_at is None and (lead or self._word_at is None):
                self._tail, self._tail_at = text[lead:], at + lead
                self._word_at = at + lead
                self._word_holds = self._could_start(self._tail)
                return None
        if self._region_at is None and self._word_at is None:
            self._tail, self._tail_at = text, at
        else:
            self._tail += text
        if self._word_at is not None and _SPACE.search(text) is None:
            tokens: Iterable[re.Match[str]] = ()  # the unfinished word goes on: nothing ends here
        else:
            tokens = _TOKEN.finditer(text)
        for m in tokens:
            token = m.group()
            start = at + m.start()
            if token[0].isspace():
                found = self._end_word(start) if self._word_at is not None else None
            elif self._word_at is None:
                self._word_at = start
                continue
            elif start + len(token) - self._word_at > MAX_REGION:
                found = self._end_word(start + len(token))
            else:
                continue
            if found is not None:
                return found
        end = at + len(text)
        self._word_holds = False
        if self._word_at is not None and end - self._word_at > MAX_REGION:  # a "word" with no end: judge it
            found = self._end_word(end)
            if found is not None:
                return found
        if self._word_at is not None:
            word = self._tail[self._word_at - self._tail_at :]
            found = None
            if text[-1] in _CLAUSE_END and not _DIGIT_OR_AT.search(word) and not _WEB.match(word):
                # "Mondays." or "Saver," is complete already; "9." or "£35," may go on ("9.5", "£35,000").
                found = self._end_word(end)
            elif self._region_at is not None and not self._could_continue(word):
                # "four minutes w" may go on ("weeks"); "four minutes wi" may not: check it now.
                found = self._close(self._word_at)
            else:
                self._word_holds = self._could_start(word)
            if found is not None:
                return found
        if self._region_at is not None:
            if end - self._region_at > MAX_REGION:
                return self._close(end)
        elif self._word_at is None:
            self._tail, self._tail_at = "", end
        return None

    def held_from(self) -> int | None:
        if not self.hold:
            return None
        if self._region_at is not None:
            return self._region_at
        return self._word_at if self._word_holds else None

    def finish(self, end: int) -> Finding | None:
        """The text ended at raw offset ``end`` (the guard may have cut what came after it)."""
        self._tail = self._tail[: max(0, end - self._tail_at)]
        found = self._end_word(end) if self._word_at is not None and self._word_at < end else None
        if found is None and self._region_at is not None:
            found = self._close(end)
        self._region_at = self._word_at = None
        self._word_holds = False
        self._lead = []
        return found

    def _end_word(self, end: int) -> Finding | None:
        """The word from ``_word_at`` to ``end`` is complete: extend, close or open a region."""
        start, self._word_at = self._word_at, None
        if start is None:
            return None
        core = self._tail[start - self._tail_at : end - self._tail_at].lstrip(_LEAD)
        if self._region_at is None and core[:1].islower() and core.isalpha() and core not in _LOWER_TRIGGERS:
            self._lead = []
            return None  # the common case: an ordinary lower-case word, no fact under way
        stripped = core.rstrip(_TRAIL)
        low = stripped.lower().replace("\u2019", "'")
        if low in ("a.m", "p.m"):
            stripped, low = stripped + ".", low + "."
        trigger = self._is_trigger(stripped, low)
        found = None
        if self._region_at is not None and not trigger and low not in _CONTINUE and not self._in_name(stripped, low):
            found = self._close(start)
        if found is None and self._region_at is None:
            if trigger:
                self._region_at = start
                self._region_lead = " ".join(self._lead) + " " if self._lead and stripped[:1].isupper() else ""
                self._lead = []
            elif self._in_name(stripped, low) and core == stripped:
                self._lead.append(stripped)  # may begin a name whose name word comes next
            else:
                self._lead = []
        if found is None and self._region_at is not None and not _CLAUSE_END.isdisjoint(core[len(stripped) :]):
            found = self._close(end)
        return found

    def _is_trigger(self, word: str, low: str) -> bool:
        if not word:
            return False
        if word[0] in _TRIGGER_CHARS or _INNER_TRIGGER.search(word):
            return True
        if word[0].isupper():
            return (self.names and _norm(low) in self._name_words) or (self.calendar and low in _CALENDAR)
        # "three", "three-minute", "twenty-four", "https://…", "www.…"
        return low in _LOWER_TRIGGERS or low.split("-", 1)[0] in _NUMBER_WORDS or _WEB.match(low) is not None

    def _could_start(self, partial: str) -> bool:
        """Could this unfinished word still become a word that opens a region?"""
        word = partial.lstrip(_LEAD)
        if not word:
            return bool(partial)  # "(" or a quote: wait for the next character
        if word[0] in _TRIGGER_CHARS or _INNER_TRIGGER.search(word):
            return True
        low = word.lower()
        if word[0].isupper():
            return (self.names and self._could_name(low)) or (self.calendar and low in _CAL_PREFIXES)
        return low in _PREFIXES or low.split("-", 1)[0] in _NUMBER_WORDS

    def _could_name(self, low: str) -> bool:
        """Could this unfinished capitalised word still become a name word or an origin?"""
        low = low.replace("\u2019", "'")
        names = self._name_words
        return low in self._name_prefixes or _norm(low) in names or _norm(low.rstrip("'")) in names

    def _in_name(self, word: str, low: str) -> bool:
        """A capitalised word that may be part of a name run (not a function or calendar word)."""
        return self.names and word[:1].isupper() and low not in STOP_CAPS and low not in _CALENDAR

    def _could_continue(self, partial: str) -> bool:
        """Could this unfinished word still continue the open region?"""
        word = partial.lstrip(_LEAD)
        return (
            partial.lower() in _CONTINUE_PREFIXES or self._could_start(partial) or (self.names and word[:1].isupper())
        )

    def _bound_facts(self, facts: Iterable[Fact]) -> list[Fact]:
        """The region's facts (of the checked kinds) with a key the knowledge binds to a topic."""
        keys = self._bound_keys
        return [f for f in facts if f.kind in self.kinds and any(k in keys for k in f.keys)]

    def _close(self, end: int) -> Finding | None:
        """Check the region ``[_region_at, end)`` and close it."""
        start, self._region_at = self._region_at, None
        if start is None:
            return None
        region = self._tail[start - self._tail_at : end - self._tail_at]
        lead, self._region_lead = self._region_lead, ""
        extracted = list(extract(region))  # (once for both checks)
        facts = unsupported(region, self.ground, self.kinds, lead=lead, extracted=extracted)
        # Grounded, but maybe only by knowledge about something else: the quantities the knowledge binds.
        bindable = [] if facts or not self.ground.bound else self._bound_facts(extracted)
        if bindable:
            recent = self._recent_text
            at = len(recent) - (self._tail_at + len(self._tail) - start)  # the region's start in `recent`
            ends = [m.end() for m in _SENTENCE_BREAK.finditer(recent, 0, max(0, at))]
            said = topic_terms(recent[ends[-1] if ends else 0 :])  # its sentence, up to what came so far
            terms = said | self._question_terms
            for fact in bindable:
                if self.ground.unbound(fact, terms, said):
                    return Finding("unsupported_fact", f"{fact.kind} {fact.text!r} (stated for something else)")
        if not facts:
            return None
        fact = facts[0]
        verdict = "unsupported" if fact.kind == "name" else self.ground.verdict(fact)
        return Finding("unsupported_fact", f"{fact.kind} {fact.text!r} ({verdict})")
