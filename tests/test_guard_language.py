"""The reply's language (issue 12, part 3): a reply must be in the user's language when the brand
speaks it, else in the brand's first; judged after the first sentence or so with the real detector
(lingua, whose models ship in its wheel), so ordinary text is not delayed; a brand may hold until it
is known. Real replies in several languages, mixed with product names and figures, and short replies
that must not be judged."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from persona import language
from persona.brand import Brand
from persona.guard import ABORTED, BrandGuard, GuardContext, GuardStep
from persona.loader import load_brands
from reply.ending import fallback_text

BRANDS = load_brands(Path(__file__).resolve().parent.parent / "brands")


def without_facts(brand: Brand) -> Brand:
    """Grounded facts off: these replies' figures and names are about their language, not their truth."""
    facts = brand.guard.facts.model_copy(update={"check": False})
    return brand.model_copy(update={"guard": brand.guard.model_copy(update={"facts": facts})})


DEMO, BANK = without_facts(BRANDS["demo"]), without_facts(BRANDS["meridian"])

# What a coffee roaster's bot says, in each language the detector knows: product names, figures and
# English loan words ("pour-over", "Hearth blend") included, as real replies have them.
REPLIES = {
    "en": [
        "Our Colombian Huila is chocolatey and smooth, lovely as a pour-over or in a French press. "
        "If you pull espresso at home, the Hearth blend is its cosy cousin.",
        "We roast on Mondays and Thursdays and ship within 24 hours, and orders over $35 ship free in the US.",
        "You can pause, skip or cancel your Roaster's Choice subscription anytime from your account page.",
    ],
    "es": [
        "Nuestro Colombian Huila es achocolatado y suave, ideal para pour-over o prensa francesa. "
        "Si preparas espresso en casa, la mezcla Hearth es su prima más acogedora.",
        "Tostamos los lunes y los jueves y enviamos en 24 horas; los pedidos de más de 35 dólares van gratis.",
        "Puedes pausar, saltar o cancelar tu suscripción Roaster's Choice cuando quieras desde tu cuenta.",
    ],
    "fr": [
        "Notre Colombian Huila est chocolaté et doux, parfait en pour-over ou à la cafetière à piston. "
        "Si vous faites des espressos à la maison, le mélange Hearth est son cousin réconfortant.",
        "Nous torréfions le lundi et le jeudi et expédions sous 24 heures ; la livraison est offerte dès 35 dollars.",
        "Vous pouvez suspendre, sauter ou annuler votre abonnement Roaster's Choice depuis votre compte.",
    ],
    "de": [
        "Unser Colombian Huila ist schokoladig und weich, ideal als Pour-over oder aus der French Press. "
        "Wenn du zu Hause Espresso machst, ist die Hearth-Mischung sein gemütlicher Cousin.",
        "Wir rösten montags und donnerstags und versenden innerhalb von 24 Stunden, ab 35 Dollar versandkostenfrei.",
        "Du kannst dein Roaster's-Choice-Abo jederzeit in deinem Konto pausieren, überspringen oder kündigen.",
    ],
    "it": [
        "Il nostro Colombian Huila è cioccolatoso e morbido, perfetto come pour-over o con la moka. "
        "Se prepari l'espresso a casa, la miscela Hearth è la sua cugina più accogliente.",
    ],
}
QUESTIONS = {
    "en": "Which coffee should I try if I like chocolate notes?",
    "es": "¿Qué café me recomiendas si me gustan las notas de chocolate?",
    "fr": "Quel café me conseillez-vous si j'aime les notes de chocolat ?",
    "de": "Welchen Kaffee empfiehlst du mir, wenn ich Schokoladennoten mag?",
    "it": "Quale caffè mi consigli se mi piacciono le note di cioccolato?",
}


def pieces(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run(brand: Brand, text: str, context: GuardContext, finish: str = "stop") -> tuple[str, list[GuardStep], list[str]]:
    """Feed ``text`` in 4-character pieces like a model's stream; what was released, every step, and the
    text fed by each step (stopping at a violation, like the job)."""
    guard = BrandGuard(brand, context)
    released, steps, fed = "", [], []
    for piece in pieces(text):
        step = guard.feed(piece)
        steps.append(step)
        fed.append(piece)
        released += step.release
        if step.violation or step.stop:
            return released, steps, fed
    step = guard.finish(finish)
    steps.append(step)
    return released + step.release, steps, fed


def violation(steps: list[GuardStep]) -> GuardStep | None:
    return next((s for s in steps if s.violation), None)


def with_language(brand: Brand, **settings: object) -> Brand:
    check = brand.guard.language.model_copy(update=settings)
    return brand.model_copy(update={"guard": brand.guard.model_copy(update={"language": check})})


def holding_language(brand: Brand) -> Brand:
    hold = brand.guard.hold.model_copy(update={"language": "sentence"})
    return brand.model_copy(update={"guard": brand.guard.model_copy(update={"hold": hold})})


# --- the measurement of issue 12: an English reply to a question in Spanish, French or German ----------


@pytest.mark.parametrize("asked", ["es", "fr", "de"])
def test_an_english_reply_to_a_question_in_the_users_supported_language_is_replaced_by_its_fallback(
    asked: str,
) -> None:
    reply = REPLIES["en"][0]
    released, steps, _ = run(DEMO, reply, GuardContext(question=QUESTIONS[asked]))
    found = violation(steps)
    assert found is not None and found.violation == "language"
    assert found.replacement == DEMO.fallbacks.language[asked]  # type: ignore[index]
    assert released, "the default adds no delay: the first sentence streamed, then it is retracted"
    note = found.notes[0]
    assert note.event == "language" and note.fields["detected"] == "en" and note.fields["expected"] == [asked]


@pytest.mark.parametrize(("asked", "answered"), list(itertools.product(["en", "es", "fr", "de"], repeat=2)))
def test_every_reply_passes_in_the_users_language_and_fails_in_another_of_the_brands(asked: str, answered: str) -> None:
    for reply in REPLIES[answered]:
        released, steps, _ = run(DEMO, reply, GuardContext(question=QUESTIONS[asked]))
        found = violation(steps)
        if asked == answered:
            assert found is None and released == reply, f"false alarm on {reply!r}"
        else:
            assert found is not None and found.violation == "language", f"missed {answered} for {asked}: {reply!r}"


def test_a_user_language_the_brand_does_not_speak_expects_the_brands_first_language() -> None:
    italian = GuardContext(question=QUESTIONS["it"])
    released, steps, _ = run(DEMO, REPLIES["en"][0], italian)
    assert violation(steps) is None and released == REPLIES["en"][0]
    _, steps, _ = run(DEMO, REPLIES["it"][0], italian)
    found = violation(steps)
    assert found is not None and found.violation == "language"
    assert found.replacement == DEMO.fallbacks.language["en"]
    want = language.expected(DEMO, QUESTIONS["it"])
    assert (want.allowed, want.user, want.source) == (frozenset({"en"}), "it", "message")


def test_the_bank_speaks_english_only_so_a_spanish_question_gets_english_and_a_spanish_reply_never_shows() -> None:
    question = "¿Cuál es el tipo de interés de la cuenta Easy Saver?"
    english = "The Easy Saver currently pays 3.10% AER variable on balances up to £250,000. Interest is paid monthly."
    released, steps, _ = run(BANK, english, GuardContext(question=question))
    assert violation(steps) is None and released == english
    spanish = (
        "La cuenta Easy Saver paga actualmente un 3,10 % TAE variable en saldos de hasta 250.000 libras. "
        "Los intereses se calculan a diario y se pagan cada mes."
    )
    released, steps, _ = run(holding_language(BANK), spanish, GuardContext(question=question))
    found = violation(steps)
    assert found is not None and found.violation == "language"
    assert released == "", "hold.language: sentence: not one word of the wrong language reached a client"
    # As shipped the bank holds whole sentences, and its first one is judged when it ends, before it goes out.
    released, steps, _ = run(BANK, spanish, GuardContext(question=question))
    assert violation(steps) is not None and released == ""
    assert found.replacement is None and fallback_text(BANK.fallbacks, "language") == BANK.fallbacks.off_brand


# --- what must not false-alarm --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "OK.",
        "Sure!",
        "Hearth blend, 250 g, $18.",
        "Sí, claro.",
        "Colombian Huila: 15 g to 250 g, three minutes.",
        "Merci, à bientôt !",
        "Ember & Oak, 12 Foundry Lane: 7am to 4pm.",
        "Yirgacheffe, Huila, Hearth or Swiss Water decaf?",
    ],
)
def test_short_replies_and_names_or_numbers_are_never_judged(reply: str) -> None:
    for asked in ("en", "es", "de"):
        released, steps, _ = run(DEMO, reply, GuardContext(question=QUESTIONS[asked]))
        assert violation(steps) is None and released == reply


@pytest.mark.parametrize("reply", ["OK.", "Thank you, Eleanor.", "Visa, Mastercard or Apple Pay.", "3.10% AER."])
def test_the_bank_does_not_judge_short_replies_either(reply: str) -> None:
    _, steps, _ = run(BANK, reply, GuardContext(question="¿Puedo pagar con Apple Pay?"))
    assert not any(s.violation == "language" for s in steps)


def test_a_bank_reply_full_of_product_names_card_networks_and_figures_is_english() -> None:
    reply = (
        "You can add your Meridian debit card to Apple Pay or Google Pay in the app, and it works wherever Visa "
        "is accepted. The daily online transfer limit is £25,000, and Faster Payments usually arrive within two "
        "hours."
    )
    released, steps, _ = run(BANK, reply, GuardContext(question="Can I use Apple Pay with my Meridian card?"))
    assert violation(steps) is None and released == reply


def test_a_long_reply_of_names_and_figures_stops_being_checked_at_max_words() -> None:
    rows = " ".join(f"Hearth {n} g, Huila {n + 1} g, Yirgacheffe {n + 2} g;" for n in range(0, 120, 3))
    guard = BrandGuard(DEMO, GuardContext(question=QUESTIONS["es"]))
    gate = guard._language
    assert gate is not None
    released = "".join(guard.feed(p).release for p in pieces(rows))
    assert not gate.pending and gate.verdict is None, "given the benefit of the doubt, not re-judged per piece"
    assert released + guard.finish("stop").release == rows


# --- where the expected language comes from -------------------------------------------------------------


def test_a_short_message_takes_its_language_from_the_earlier_user_turns() -> None:
    context = GuardContext(
        question="ok, gracias",
        user_turns=("Hola, ¿cuánto tarda el envío a Madrid?", "¿Y si pido dos bolsas de café?"),
    )
    _, steps, _ = run(DEMO, REPLIES["en"][1], context)
    found = violation(steps)
    assert found is not None and found.notes[0].fields["source"] == "turns"
    released, steps, _ = run(DEMO, REPLIES["es"][1], context)
    assert violation(steps) is None and released == REPLIES["es"][1]


def test_with_nothing_to_go_on_the_client_locale_decides() -> None:
    context = GuardContext(question="ok", locale="fr-CA")
    want = language.expected(DEMO, "ok", (), "fr-CA")
    assert (want.allowed, want.user, want.source) == (frozenset({"fr"}), "fr", "locale")
    _, steps, _ = run(DEMO, REPLIES["de"][0], context)
    assert violation(steps) is not None
    released, steps, _ = run(DEMO, REPLIES["fr"][0], context)
    assert violation(steps) is None and released == REPLIES["fr"][0]


def test_a_brand_that_declares_no_languages_answers_every_user_in_their_own() -> None:
    anyone = DEMO.model_copy(update={"languages": []})
    italian = GuardContext(question=QUESTIONS["it"])
    released, steps, _ = run(anyone, REPLIES["it"][0], italian)
    assert violation(steps) is None and released == REPLIES["it"][0]
    found = violation(run(anyone, REPLIES["en"][0], italian)[1])
    assert found is not None and found.violation == "language" and found.replacement is None  # off_brand
    assert language.expected(anyone, "ok").allowed == frozenset(language.LANGUAGES)


def test_with_nothing_known_any_of_the_brands_languages_passes() -> None:
    context = GuardContext(question="hola")
    assert language.expected(DEMO, "hola").allowed == frozenset(DEMO.languages)
    for answered in ("en", "es", "fr", "de"):
        for reply in REPLIES[answered]:
            assert violation(run(DEMO, reply, context)[1]) is None


def test_a_close_relative_nobody_in_the_conversation_speaks_does_not_make_a_reply_wrong() -> None:
    """The detector alone gives this Spanish sentence (names left out) 40 % Portuguese: judged among the
    languages of the conversation it is Spanish; a Portuguese or Italian speaker keeps their relatives."""
    sentence = " ".join(language.language_words("Claro, la mezcla Hearth es ideal para espresso en casa."))
    assert language.confidences(sentence)["pt"] > 0.2
    spanish = language.expected(DEMO, QUESTIONS["es"])
    assert spanish.among == frozenset({"en", "es", "fr", "de", "nl"})
    verdict = language.judge(sentence, spanish, DEMO.guard.language.min_confidence)
    assert verdict is not None and not verdict.wrong and verdict.detected == "es"
    italian = language.expected(DEMO, QUESTIONS["it"])
    assert {"it", "es"} <= italian.among and italian.allowed == frozenset({"en"})


def test_the_message_itself_wins_over_the_locale_and_the_earlier_turns() -> None:
    context = GuardContext(
        question="How long does shipping to Berlin take?", user_turns=("Hallo, wie geht's?",), locale="de-DE"
    )
    assert violation(run(DEMO, REPLIES["en"][1], context)[1]) is None
    assert violation(run(DEMO, REPLIES["de"][1], context)[1]) is not None


# --- latency: what the check holds --------------------------------------------------------------------


def test_by_default_the_language_check_holds_nothing_the_other_checks_would_not() -> None:
    """The same reply through a guard with the check and one without releases the same text at the same pieces."""
    context = GuardContext(question=QUESTIONS["es"])
    for reply in (*REPLIES["es"], *REPLIES["en"][:1]):
        _, checked, _ = run(DEMO, reply, context)
        _, unchecked, _ = run(with_language(DEMO, action="off"), reply, context)
        upto = next((i for i, s in enumerate(checked) if s.violation), len(checked))
        assert [s.release for s in checked[:upto]] == [s.release for s in unchecked[:upto]]


def test_holding_for_the_language_releases_the_first_sentence_once_it_is_judged_then_streams() -> None:
    brand = holding_language(DEMO)
    reply = REPLIES["es"][0]
    released, steps, fed = run(brand, reply, GuardContext(question=QUESTIONS["es"]))
    assert violation(steps) is None and released == reply
    first = next(i for i, s in enumerate(steps) if s.release)
    assert "".join(fed[: first + 1]).count(" ") >= brand.guard.language.min_words, "held until judged"
    # From then on text streams as without the check: it lags only by what a phrase or pattern holds.
    out = len("".join(s.release for s in steps[: first + 1]))
    for i in range(first + 1, len(fed)):
        out += len(steps[i].release)
        assert len("".join(fed[: i + 1])) - out <= 16


def test_a_log_brand_notes_a_wrong_language_and_keeps_the_reply() -> None:
    brand = with_language(DEMO, action="log")
    reply = REPLIES["en"][0]
    released, steps, _ = run(brand, reply, GuardContext(question=QUESTIONS["es"]))
    assert violation(steps) is None and released == reply
    notes = [n for s in steps for n in s.notes if n.event == "language"]
    assert len(notes) == 1 and notes[0].fields["action"] == "log"


def test_a_reply_shorter_than_the_first_check_is_judged_at_its_end() -> None:
    reply = "We roast every week and ship the beans the same day"  # 11 words, no sentence end yet
    guard = BrandGuard(DEMO, GuardContext(question=QUESTIONS["de"]))
    assert guard.feed(reply).violation is None
    end = guard.finish("stop")
    assert end.violation == "language" and end.replacement == DEMO.fallbacks.language["de"]


def test_a_cut_reply_in_the_wrong_language_is_replaced_not_trimmed() -> None:
    guard = BrandGuard(holding_language(DEMO), GuardContext(question=QUESTIONS["fr"]))
    assert guard.feed("We roast every week and ship the beans the same").release == ""
    assert guard.finish("length").violation == "language"


def test_an_aborted_attempt_releases_held_text_only_in_the_right_language() -> None:
    guard = BrandGuard(holding_language(BANK), GuardContext(question="Quiero saber el tipo de interés"))
    assert guard.feed("La cuenta Easy Saver paga un tipo variable que se calcula cada día").release == ""
    assert guard.finish(ABORTED).release == ""
    guard = BrandGuard(holding_language(BANK), GuardContext(question="What does the Easy Saver pay?"))
    assert guard.feed("The Easy Saver pays a variable rate").release == ""
    assert guard.finish(ABORTED).release == "The Easy Saver pays a variable rate"


# --- the detector -----------------------------------------------------------------------------------------


def test_the_detector_is_built_once_per_process_even_when_threads_race_for_it() -> None:
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(language.detector())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(seen) == 4 and all(d is seen[0] for d in seen)
    assert language.detector() is seen[0]


def test_the_detector_knows_exactly_the_languages_a_brand_may_declare() -> None:
    assert set(language.LANGUAGES) == {"en", "es", "fr", "de", "it", "pt", "nl"}
    assert set(language.confidences(REPLIES["de"][1])) == set(language.LANGUAGES)


@pytest.mark.parametrize(
    ("locale", "code"), [("es-MX", "es"), ("pt_BR", "pt"), ("DE", "de"), ("ja-JP", None), ("", None)]
)
def test_a_locale_hint_gives_its_language_when_the_detector_knows_it(locale: str, code: str | None) -> None:
    assert language.locale_language(locale) == code
