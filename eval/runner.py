"""Run scenarios through the real server core and check every reply.

Checks (rows of the table; every reply is counted once per check that applies to it):

==============  ===============================================================================
``completed``   the stream ended with ``done`` (not ``error``)
``rules``       the final text breaks none of the guard's rules (:func:`persona.checks.check_text`)
``length``      at most the brand's ``length.max_sentences``
``emoji``       the brand's emoji policy (``sparingly``: at most one)
``sign_off``    the brand's sign-off policy
``on_topic``    the guard's end-of-reply relevance check did not flag it (replies too short to
                judge are n/a)
``no_fallback`` the guard did not have to replace it (n/a where the scenario expects a fallback)
``expect``      the turn's ``contains`` / ``contains_any`` / ``not_contains`` / ``fallback``
``deflects``    off-topic and injection turns steer back to the brand's topics: domain coverage
                at least the brand's threshold, and at least one allowed-topic word
``memory``      a fact from earlier turns (``recall``) is in the reply
==============  ===============================================================================
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from api.runtime import Runtime
from api.settings import Settings
from eval.scenarios import Scenario, ScenarioFile, Turn
from persona.brand import Brand
from persona.checks import check_text, coverage, policy_findings
from persona.text import term_set
from streaming.ids import new_id

CHECKS = (
    "completed",
    "rules",
    "length",
    "emoji",
    "sign_off",
    "on_topic",
    "no_fallback",
    "expect",
    "deflects",
    "memory",
)


@dataclass
class Reply:
    scenario: str
    turn: int
    user: str
    text: str
    terminal: str  # done | error
    outcome: str  # finish_reason or error code
    retracted: bool
    off_topic: dict[str, Any] | None = None
    seconds: float = 0.0


@dataclass
class Result:
    check: str
    reply: Reply
    ok: bool | None  # None: not applicable
    detail: str = ""


@dataclass
class BrandReport:
    brand: Brand
    replies: list[Reply] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    def counts(self) -> dict[str, tuple[int, int, int]]:
        table: dict[str, list[int]] = {c: [0, 0, 0] for c in CHECKS}
        for r in self.results:
            table[r.check][0 if r.ok else 1 if r.ok is False else 2] += 1
        return {c: (v[0], v[1], v[2]) for c, v in table.items()}

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.ok is False]


def _has(text: str, needle: str) -> bool:
    return needle.lower() in text.lower()


def check_reply(brand: Brand, turn: Turn, reply: Reply) -> list[Result]:
    """Every check for one reply (pure: the tests call it directly too)."""
    out: list[Result] = []

    def add(check: str, ok: bool | None, detail: str = "") -> None:
        out.append(Result(check, reply, ok, detail))

    expect = turn.expect
    add("completed", reply.terminal == "done", "" if reply.terminal == "done" else f"error {reply.outcome}")
    findings = check_text(brand, reply.text)
    add("rules", not findings, "; ".join(map(str, findings)))
    policies = {f.rule: f.detail for f in policy_findings(brand, reply.text)}
    for check in ("length", "emoji", "sign_off"):
        add(check, check not in policies, policies.get(check, ""))
    if reply.off_topic is not None:
        add("on_topic", False, f"coverage {reply.off_topic['score']} < {reply.off_topic['threshold']}")
    else:
        judged = coverage(brand, reply.text, [reply.user])
        add("on_topic", True if judged is not None else None)
    fell_back = reply.outcome == "fallback"
    add("no_fallback", None if expect.fallback else not fell_back, "replaced by the guard" if fell_back else "")
    problems = [f"missing {n!r}" for n in expect.contains if not _has(reply.text, n)]
    if expect.contains_any and not any(_has(reply.text, n) for n in expect.contains_any):
        problems.append(f"none of {expect.contains_any}")
    problems += [f"contains {n!r}" for n in expect.not_contains if _has(reply.text, n)]
    if expect.fallback is not None and expect.fallback != fell_back:
        problems.append("expected a fallback" if expect.fallback else "unexpected fallback")
    has_expectations = expect.contains or expect.contains_any or expect.not_contains or expect.fallback is not None
    add("expect", not problems if has_expectations else None, "; ".join(problems))
    if expect.deflects:
        scored = coverage(brand, reply.text)
        topic_terms = term_set(brand.allowed_topics)
        mentions = bool(topic_terms & term_set([reply.text]))
        ok = (scored is None or scored[0] >= brand.guard.off_topic.threshold) and mentions
        add("deflects", ok, "" if ok else f"coverage {scored and round(scored[0], 2)}, topic mentioned: {mentions}")
    else:
        add("deflects", None)
    if expect.recall:
        add("memory", _has(reply.text, expect.recall), "" if _has(reply.text, expect.recall) else "not recalled")
    else:
        add("memory", None)
    return out


async def _run_turn(runtime: Runtime, brand: Brand, conversation_id: str, scenario: Scenario, index: int) -> Reply:
    turn = scenario.turns[index]
    started = time.monotonic()
    submission = await runtime.manager.submit(
        conversation_id=conversation_id, brand=brand, client_message_id=new_id("m"), text=turn.user
    )
    text, retracted, terminal = "", False, {"type": "error", "code": "no_terminal"}
    async for event in runtime.follow(submission.stream_id, 0, transport="eval"):
        payload = event.payload()
        if event.type == "delta":
            text += payload["text"]
        elif event.type == "retract":
            text, retracted = payload["text"], True
        elif event.terminal:
            terminal = payload
    return Reply(
        scenario=scenario.name,
        turn=index + 1,
        user=turn.user,
        text=terminal.get("text", text),
        terminal=terminal["type"],
        outcome=terminal.get("finish_reason") or terminal.get("code") or "",
        retracted=retracted,
        seconds=time.monotonic() - started,
    )


async def run_eval(
    settings: Settings, files: dict[str, ScenarioFile], brands: list[str] | None = None, *, timeout_s: float = 600
) -> list[BrandReport]:
    """Run the scenarios of ``brands`` (default: every brand that has a scenario file)."""
    runtime = Runtime.build(settings)
    off_topic: dict[str, dict[str, Any]] = {}

    def record(event: str, fields: dict[str, Any]) -> None:
        if event == "off_topic":
            off_topic[fields["stream_id"]] = fields

    runtime.hooks.add(record)
    await runtime.start()
    reports = []
    try:
        async with asyncio.timeout(timeout_s):
            for brand_id in brands or sorted(files):
                if brand_id not in files:
                    raise ValueError(f"no scenario file for brand {brand_id!r}")
                brand = runtime.brand(brand_id)
                report = BrandReport(brand)
                for scenario in files[brand_id].scenarios:
                    conversation_id = new_id("c")
                    for index, turn in enumerate(scenario.turns):
                        seen = set(off_topic)
                        reply = await _run_turn(runtime, brand, conversation_id, scenario, index)
                        flagged = [v for k, v in off_topic.items() if k not in seen]
                        reply.off_topic = flagged[0] if flagged else None
                        report.replies.append(reply)
                        report.results += check_reply(brand, turn, reply)
                reports.append(report)
    finally:
        await runtime.stop()
    return reports


def render(reports: list[BrandReport], provider: str) -> str:
    lines = []
    if provider != "openai":
        lines.append(
            f"provider: {provider} — this checks the RULES (persona, memory, guard, fallbacks), "
            "not the quality of a real model."
        )
    else:
        lines.append("provider: openai — deterministic checks; add --judge for the voice rubric.")
    for report in reports:
        brand = report.brand
        lines.append("")
        lines.append(f"brand {brand.id} (v{brand.version}, {brand.name}): {len(report.replies)} replies")
        lines.append(f"  {'check':<12} {'pass':>5} {'fail':>5} {'n/a':>5}")
        for check, (ok, bad, na) in report.counts().items():
            mark = "  FAIL" if bad else ""
            lines.append(f"  {check:<12} {ok:>5} {bad:>5} {na:>5}{mark}")
        for failure in report.failures:
            reply = failure.reply
            where = f"{reply.scenario} turn {reply.turn}"
            lines.append(f"  ✗ {failure.check}: {where}: {failure.detail} — reply: {reply.text[:100]!r}")
    return "\n".join(lines)
