"""How well the streaming guard tells good replies from off-brand ones, on the labelled set.

Each reply of ``eval/labelled/<brand>.yaml`` is streamed through the guard the server uses
(:func:`persona.guard.brand_guard`, what ``api.runtime`` installs while ``GUARD_ENABLED``) in
4-character pieces, like an OpenAI stream, with the :class:`~persona.guard.GuardContext` a reply job
builds for a first turn (``reply/jobs.py``): the question and the knowledge snippets the prompt
retrieved for it (:func:`persona.prompt.pick_knowledge`). The stream stops where the server would
stop the upstream call: at a violation, or where the length policy ends the reply.

A reply counts as **flagged** when the guard replaced it (any violation: a rule, a leak, off-topic
with ``action: fallback``, a length fallback) or ended it early (the length policy's trim). An
off-topic *note* on a brand that only logs off-topic replies (``action: log``) is not a replacement;
it is counted separately (**noted**, as is any other note of a check that only logs) and the brand
figures are given both without and with notes.

=================  ==============================================================================
precision          flagged off-brand / all flagged
recall             flagged off-brand / all off-brand (per kind: of that kind)
FPR                flagged good / all good (per kind: of that kind) — the false-positive rate
kind precision     flagged of the kind / (flagged of the kind + all flagged good replies): the
                   precision if the off-brand replies were all of this kind
=================  ==============================================================================

The guard's cost per token is measured as ``bench/guard_bench.py`` does — the time of the ``feed``
calls per piece, median of ``rounds``, next to the pass-through guard, and the end-of-reply ``finish``
per reply — here over the labelled replies themselves (each as far as the guard let it stream), and on
the process's CPU clock (``time.process_time``) rather than the wall clock, so that other work on a
shared machine does not inflate it.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eval.labelled import GOOD_KINDS, OFFBRAND_KINDS, Item, LabelledFile, for_brand
from persona.brand import Brand
from persona.guard import GuardContext, GuardFactory, ReplyGuard, brand_guard, pass_through
from persona.prompt import pick_knowledge

PIECE_CHARS = 4  # about one OpenAI token


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def guard_context(brand: Brand, question: str) -> GuardContext:
    """What a reply job gives the guard on a first turn: the question and the retrieved facts."""
    return GuardContext(question=question, context=tuple(s.text for s in pick_knowledge(brand, question)))


@dataclass(frozen=True)
class Verdict:
    item: Item
    rule: str | None  # the violation the guard reported (the reply was replaced), or None
    trimmed: bool  # the length policy ended the reply early (no violation)
    notes: tuple[str, ...]  # the events of the guard's notes (off_topic …: logged, not necessarily replaced)
    pieces: int  # pieces fed before the guard stopped the stream

    @property
    def noted(self) -> bool:
        return bool(self.notes)

    @property
    def flagged(self) -> bool:
        return self.rule is not None or self.trimmed

    @property
    def outcome(self) -> str:
        return self.rule or ("trimmed" if self.trimmed else "noted" if self.noted else "passed")


def stream(guard: ReplyGuard, text: str) -> tuple[str | None, bool, tuple[str, ...], int]:
    """Feed ``text`` in pieces then finish, stopping where the server stops: (rule, trimmed, the events
    of the guard's notes, pieces fed)."""
    notes: list[str] = []
    fed = 0
    for piece in pieces(text):
        fed += 1
        step = guard.feed(piece)
        notes += (n.event for n in step.notes)
        if step.violation is not None:
            return step.violation, False, tuple(notes), fed
        if step.stop:
            return None, True, tuple(notes), fed
    step = guard.finish("stop")
    notes += (n.event for n in step.notes)
    return step.violation, False, tuple(notes), fed


def judge_item(brand: Brand, item: Item, factory: GuardFactory = brand_guard) -> Verdict:
    rule, trimmed, notes, fed = stream(factory(brand, guard_context(brand, item.question)), item.reply)
    return Verdict(item, rule, trimmed, notes, fed)


@dataclass(frozen=True)
class Confusion:
    tp: int = 0  # off-brand, flagged
    fp: int = 0  # good, flagged
    fn: int = 0  # off-brand, let through
    tn: int = 0  # good, let through

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float | None:
        return _ratio(self.fp, self.fp + self.tn)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def confusion(verdicts: Iterable[Verdict], *, with_notes: bool = False) -> Confusion:
    counts: Counter[str] = Counter()
    for v in verdicts:
        hit = v.flagged or (with_notes and v.noted)
        bad = v.item.label == "offbrand"
        counts["tp" if bad and hit else "fn" if bad else "fp" if hit else "tn"] += 1
    return Confusion(counts["tp"], counts["fp"], counts["fn"], counts["tn"])


@dataclass(frozen=True)
class KindRow:
    kind: str
    label: str
    n: int
    flagged: int
    noted: int  # noted and not flagged
    rate: float | None  # recall (off-brand kinds) or false-positive rate (good kinds)
    precision: float | None  # off-brand kinds only: flagged / (flagged + every flagged good reply)
    rules: dict[str, int]  # what stopped them: rule name (or "trimmed") → count


def kind_rows(verdicts: Sequence[Verdict]) -> list[KindRow]:
    """One row per kind present, off-brand kinds first, in the order of ``OFFBRAND_KINDS`` / ``GOOD_KINDS``."""
    false_pos = sum(1 for v in verdicts if v.item.label == "good" and v.flagged)
    rows = []
    for label, kinds in (("offbrand", OFFBRAND_KINDS), ("good", GOOD_KINDS)):
        for kind in kinds:
            mine = [v for v in verdicts if v.item.label == label and v.item.kind == kind]
            if not mine:
                continue
            flagged = sum(v.flagged for v in mine)
            noted = sum(v.noted and not v.flagged for v in mine)
            rules = Counter(v.outcome for v in mine if v.flagged)
            precision = _ratio(flagged, flagged + false_pos) if label == "offbrand" else None
            rows.append(KindRow(kind, label, len(mine), flagged, noted, flagged / len(mine), precision, dict(rules)))
    return rows


def rule_rows(verdicts: Sequence[Verdict]) -> list[tuple[str, int, int]]:
    """Per rule that fired (or ``trimmed``): (rule, on off-brand replies, on good replies), most used first."""
    bad: Counter[str] = Counter()
    good: Counter[str] = Counter()
    for v in verdicts:
        if v.flagged:
            (bad if v.item.label == "offbrand" else good)[v.outcome] += 1
    return sorted(((r, bad[r], good[r]) for r in bad | good), key=lambda t: (-(t[1] + t[2]), t[0]))


@dataclass(frozen=True)
class Cost:
    pieces: int
    guard_us_per_token: float
    pass_through_us_per_token: float
    finish_ms_per_reply: float


# One reply to time: its guard context, its pieces, and how many of them the guard was fed.
_Work = tuple[GuardContext, list[str], int]


def _time(factory: GuardFactory, brand: Brand, work: Sequence[_Work]) -> tuple[float, float]:
    """Seconds of ``feed`` per piece and of ``finish`` per reply, over ``work`` (context, pieces, how many fed)."""
    feeding = finishing = 0.0
    fed_total = 0
    for context, parts, fed in work:
        guard = factory(brand, context)
        started = time.process_time()
        for part in parts[:fed]:
            guard.feed(part)
        fed_at = time.process_time()
        guard.finish("stop")
        finishing += time.process_time() - fed_at
        feeding += fed_at - started
        fed_total += fed
    return feeding / max(fed_total, 1), finishing / max(len(work), 1)


def cost_per_token(
    brand: Brand, verdicts: Sequence[Verdict], rounds: int = 5, factory: GuardFactory = brand_guard
) -> Cost:
    """The guard's CPU time per token over these replies, as far as each was streamed (median of rounds)."""
    work = [(guard_context(brand, v.item.question), pieces(v.item.reply), v.pieces) for v in verdicts]
    guarded, finish, base = [], [], []
    for _ in range(max(rounds, 1)):
        per_token, per_reply = _time(factory, brand, work)
        guarded.append(per_token)
        finish.append(per_reply)
        base.append(_time(pass_through, brand, work)[0])
    return Cost(
        pieces=sum(w[2] for w in work),
        guard_us_per_token=statistics.median(guarded) * 1e6,
        pass_through_us_per_token=statistics.median(base) * 1e6,
        finish_ms_per_reply=statistics.median(finish) * 1e3,
    )


@dataclass
class BrandMeasure:
    brand: Brand
    verdicts: list[Verdict] = field(default_factory=list)
    cost: Cost | None = None
    languages: list[str] | None = None  # as declared by the brand (None: it declares none)
    relabelled: int = 0  # items whose label follows from those languages (eval.labelled.for_brand)

    @property
    def confusion(self) -> Confusion:
        return confusion(self.verdicts)

    @property
    def confusion_with_notes(self) -> Confusion:
        return confusion(self.verdicts, with_notes=True)


def measure(
    brands: dict[str, Brand],
    files: dict[str, LabelledFile],
    only: Sequence[str] | None = None,
    *,
    rounds: int = 5,
    limit: int | None = None,
    factory: GuardFactory = brand_guard,
) -> list[BrandMeasure]:
    """Every labelled reply of ``only`` (default: every brand with a file) through the guard.
    ``limit``: at most that many items of each kind (a quick slice); ``rounds=0``: no cost measured."""
    out = []
    for brand_id in only or sorted(files):
        if brand_id not in files:
            raise ValueError(f"no labelled file for brand {brand_id!r}")
        if brand_id not in brands:
            raise ValueError(f"labelled file for {brand_id!r}, which is not a loaded brand")
        brand = brands[brand_id]
        # The brand's declared languages, when the brand model has them (issue 12's language check).
        languages: list[str] | None = getattr(brand, "languages", None)
        items, relabelled = for_brand(files[brand_id].items, languages)
        if limit is not None:
            taken: Counter[tuple[str, str]] = Counter()
            kept = []
            for item in items:
                if taken[item.label, item.kind] < limit:
                    taken[item.label, item.kind] += 1
                    kept.append(item)
            items = kept
        verdicts = [judge_item(brand, item, factory) for item in items]
        result = BrandMeasure(brand, verdicts, languages=languages, relabelled=relabelled)
        if rounds > 0:
            result.cost = cost_per_token(brand, result.verdicts, rounds, factory)
        out.append(result)
    return out


# --- output -------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def render_measures(
    results: Sequence[BrandMeasure],
    *,
    misses: bool = False,
    title: str = "Labelled replies",
    source: str = "eval/labelled/",
) -> str:
    """Markdown tables (paste them into docs/prompting.md under "Measured"); ``title`` and ``source`` name
    the set (the first labelled set by default, or the held-out one)."""
    lines = [
        f"{title} through the streaming guard ({source}, 4-character pieces; "
        "flagged = replaced or cut by the guard; notes = what a log-only check noted, e.g. off-topic)",
        "",
        "| brand | good | off-brand | precision | recall | FPR | with notes: precision | recall | FPR "
        "| guard µs/token | pass-through µs/token | finish ms/reply |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        c, n = r.confusion, r.confusion_with_notes
        cost = "— | — | —"
        if r.cost:
            guard, base, finish = (
                r.cost.guard_us_per_token,
                r.cost.pass_through_us_per_token,
                r.cost.finish_ms_per_reply,
            )
            cost = f"{guard:.1f} | {base:.1f} | {finish:.3f}"
        lines.append(
            f"| {r.brand.id} | {c.fp + c.tn} | {c.tp + c.fn} | {_pct(c.precision)} | {_pct(c.recall)} | "
            f"{_pct(c.fpr)} | {_pct(n.precision)} | {_pct(n.recall)} | {_pct(n.fpr)} | {cost} |"
        )
    if len(results) > 1:
        every = [v for r in results for v in r.verdicts]
        c, n = confusion(every), confusion(every, with_notes=True)
        lines.append(
            f"| **all** | {c.fp + c.tn} | {c.tp + c.fn} | {_pct(c.precision)} | {_pct(c.recall)} | {_pct(c.fpr)} | "
            f"{_pct(n.precision)} | {_pct(n.recall)} | {_pct(n.fpr)} | | | |"
        )
    lines.append("")
    for r in results:
        if r.languages:
            spoken = ", ".join(r.languages)
            lines.append(f"{r.brand.id}: languages {spoken}; {r.relabelled} language items relabelled for them")
        else:
            lines.append(f"{r.brand.id}: no languages declared (a reply in the user's is expected); labels as written")
    for r in results:
        lines += [
            "",
            f"{r.brand.id} per kind (off-brand: recall and kind precision; good: false-positive rate)",
            "",
            "| kind | label | n | flagged | noted only | recall / FPR | kind precision | stopped by |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in kind_rows(r.verdicts):
            rate = f"{'recall' if row.label == 'offbrand' else 'FPR'} {_pct(row.rate)}"
            stopped = ", ".join(f"{k} {v}" for k, v in sorted(row.rules.items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(
                f"| {row.kind} | {row.label} | {row.n} | {row.flagged} | {row.noted} | {rate} | "
                f"{_pct(row.precision)} | {stopped or '—'} |"
            )
        rules = rule_rows(r.verdicts)
        if rules:
            lines += [
                "",
                f"{r.brand.id} per rule that fired",
                "",
                "| rule | on off-brand | on good |",
                "| --- | ---: | ---: |",
            ]
            lines += [f"| {rule} | {bad} | {good} |" for rule, bad, good in rules]
        if misses:
            wrong = [v for v in r.verdicts if v.flagged != (v.item.label == "offbrand")]
            lines += ["", f"{r.brand.id}: {len(wrong)} wrong verdicts"]
            for v in wrong:
                what = "missed" if v.item.label == "offbrand" else f"false positive ({v.outcome})"
                lines.append(f"  {v.item.id} [{v.item.kind}] {what}: {v.item.reply[:90]!r}")
    return "\n".join(lines)


def to_json(results: Sequence[BrandMeasure], *, set_name: str = "labelled") -> dict[str, Any]:
    """The same figures, machine-readable (``python -m eval --json FILE``), with every verdict; ``set_name``
    names the labelled set they were measured on."""

    def figures(c: Confusion) -> dict[str, Any]:
        return {
            "tp": c.tp,
            "fp": c.fp,
            "fn": c.fn,
            "tn": c.tn,
            "precision": c.precision,
            "recall": c.recall,
            "fpr": c.fpr,
        }

    every = [v for r in results for v in r.verdicts]
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "set": set_name,
        "guard": f"{brand_guard.__module__}.{brand_guard.__qualname__}",
        "piece_chars": PIECE_CHARS,
        "overall": figures(confusion(every)),
        "overall_with_notes": figures(confusion(every, with_notes=True)),
        "brands": {
            r.brand.id: {
                "version": r.brand.version,
                "languages": r.languages,
                "relabelled": r.relabelled,
                "figures": figures(r.confusion),
                "with_notes": figures(r.confusion_with_notes),
                "cost": None if r.cost is None else vars(r.cost),
                "kinds": [vars(row) for row in kind_rows(r.verdicts)],
                "rules": [{"rule": rule, "offbrand": bad, "good": good} for rule, bad, good in rule_rows(r.verdicts)],
                "verdicts": [
                    {
                        "id": v.item.id,
                        "label": v.item.label,
                        "kind": v.item.kind,
                        "flagged": v.flagged,
                        "outcome": v.outcome,
                        "notes": list(v.notes),
                        "question_lang": v.item.question_lang,
                        "reply_lang": v.item.reply_lang,
                    }
                    for v in r.verdicts
                ],
            }
            for r in results
        },
    }
