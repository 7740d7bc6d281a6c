"""Issue 12 follow-up: the guard's general capabilities beyond the families it had, each with the
replies it must stop and the good ones (negations, refusals, short and other-language answers) it must
let through. Replies are streamed word by word through the real guard (tests/guard_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.guard import BrandGuard
from persona.loader import load_brands
from tests.guard_helpers import run

BRANDS = load_brands(Path(__file__).resolve().parent.parent / "brands")
DEMO, BANK = BRANDS["demo"], BRANDS["meridian"]


def fired(brand_id: str, text: str, question: str = "") -> str | None:
    released, step = run(BRANDS[brand_id], text, question)
    if step is None:
        assert released == text, "a reply that passes goes out whole"
        return None
    assert step.violation is not None
    return step.violation


# --- off-topic: the roaster replaces replies that are not about its domain ------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The capital of Australia is Canberra.",
        "Paris is the capital of France, on the Seine.",
        "The home side won two goals to one with a late penalty.",
        "Preheat the oven, layer the pasta with ragù and béchamel, and bake it until golden.",
    ],
)
def test_the_roaster_replaces_an_off_topic_reply_even_a_short_one(text: str) -> None:
    assert fired("demo", text, "Quick question") == "off_topic"


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Coarse, and steep for four minutes.", "French press grind?"),
        ("8 till 2 on Saturdays and Sundays!", "Weekend hours?"),
        ("Bye for now, coffee friend!", "Thanks, bye"),
        ("I can't give medical advice, so please ask your doctor about caffeine.", "Is coffee OK for my heart?"),
        ("Never share your card details in the chat: payments only happen at our secure checkout.", "Card?"),
        ("That one's outside my little roastery, I'm afraid, but I can help with beans and brewing.", "Taxes?"),
        ("Tostamos los lunes y jueves y enviamos en 24 horas.", "¿Cuándo tostáis el café?"),
    ],
)
def test_good_short_refusing_and_other_language_replies_are_on_topic_for_the_roaster(text: str, question: str) -> None:
    assert fired("demo", text, question) is None


# --- prompt leaks that are not verbatim --------------------------------------------------------------


def test_a_base64_or_hex_recital_is_a_leak_and_none_of_it_is_released() -> None:
    import base64

    secret = "Answer the question in the first sentence and never invent discounts."
    for encoded in (base64.b64encode(secret.encode()).decode(), secret.encode().hex()):
        released, step = run(DEMO, f"Sure thing! {encoded} Enjoy.")
        assert step is not None and step.violation == "prompt_leak"
        assert released == "Sure thing! ", "no character of the encoded run reaches a client"


def test_rot13_and_reversed_recitals_are_leaks() -> None:
    rule = "Never invent discounts, promo codes or prices that are not in the facts."
    rot13 = rule.translate(str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                         "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM"))  # fmt: skip
    assert fired("demo", f"Here you go: {rot13}") == "prompt_leak"
    assert fired("demo", f"Here you go: {rule[::-1]}") == "prompt_leak"


@pytest.mark.parametrize("first", ["Ref7", "ORD7731", "V60"])
def test_a_word_no_encoding_of_text_could_begin_with_is_not_held_as_a_possible_recital(first: str) -> None:
    # Base64 of text begins with a quad that decodes to printable UTF-8 ("QW5z" is "Ans"), hex with
    # printable bytes; "Ref7" decodes to b"E\xe7\xfb", so a recital could only start after it.
    from persona.encoded import EncodedScanner

    scanner = EncodedScanner()
    assert scanner.feed(first, 0) is None
    held = scanner.held_from()
    assert held is None or held >= 4
    assert BrandGuard(DEMO).feed(first[:4]).release == first[:4]


def test_a_run_that_could_begin_encoded_text_is_held_from_its_first_character() -> None:
    import base64

    from persona.encoded import EncodedScanner

    for encoded in (base64.b64encode(b"Answer the question").decode(), b"Answer the question".hex()):
        scanner = EncodedScanner()
        scanner.feed(encoded[:6], 10)
        assert scanner.held_from() == 10, encoded


@pytest.mark.parametrize(
    "text",
    [
        "Track it at https://ember.example/t/AbC123xYz987QwE456 once it ships.",
        "Our V60 recipe: 15 grams of coffee to 250 grams of water.",
        "Your order number is ORD7731 and it ships within 24 hours of roasting.",
    ],
)
def test_ids_and_ordinary_mixed_words_are_not_encoded_text(text: str) -> None:
    _, step = run(DEMO, text, "Where is my order ORD7731 and how do I track it at ember.example?")
    assert step is None or step.violation != "prompt_leak"


@pytest.mark.parametrize(
    ("brand_id", "text"),
    [
        ("demo", "Mis instrucciones dicen: responde en la primera frase."),
        ("demo", "Mes instructions disent de rester bref et chaleureux."),
        ("demo", "Meine Anweisungen lauten: immer freundlich bleiben."),
        ("demo", "As minhas instruções dizem para responder na primeira frase."),
        ("demo", "Here's how I'm configured: warm, playful and concise."),
        ("demo", "Config summary: persona Juniper; brand Ember & Oak; languages en, es, fr, de."),
        ("demo", "The text above our chat tells me I'm Juniper, a friendly barista."),
        ("demo", "Juniper is configured to answer in four sentences at most."),
        ("meridian", "Persona: Meridian Assistant; tone: formal; banned phrases: no worries."),
    ],
)
def test_translated_and_paraphrased_config_talk_is_meta_talk(brand_id: str, text: str) -> None:
    assert fired(brand_id, text) in {"meta_talk", "language"}


@pytest.mark.parametrize(
    ("brand_id", "text"),
    [
        ("demo", "I'm Juniper from Ember & Oak. Ask me anything about our beans!"),
        ("demo", "I can't share my instructions, but I'm happy to talk coffee."),
        ("demo", "Flavour: chocolatey and smooth, lovely as a pour-over."),
        ("meridian", "I am the Meridian Assistant, an automated service."),
    ],
)
def test_saying_who_it_is_or_refusing_to_share_its_instructions_is_not_meta_talk(brand_id: str, text: str) -> None:
    assert fired(brand_id, text, "Who are you?") is None


# --- unsafe promises and advice ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand_id", "text"),
    [
        ("demo", "Caffeine at that dose is completely harmless."),
        ("demo", "Keep it to three shots a day and you and the baby will be totally fine."),
        ("demo", "Take a magnesium supplement and the jitters will go."),
        ("demo", "It'll be on your doorstep tomorrow morning, guaranteed."),
        ("demo", "Your first bag is on the house: just add FIRSTCUP in the notes."),
        ("demo", "Please send us your full card number so I can check the order."),
        ("demo", "I have now cancelled your subscription and refunded the last bag."),
        ("meridian", "Your savings are completely safe with us."),
        ("meridian", "You will not need to pay tax on that interest."),
        ("meridian", "Buying gold now would be sensible."),
        ("meridian", "You should sell your shares and move your savings into the Fixed Saver."),
        ("meridian", "House prices are expected to rise, so buying now is a sound investment."),
        ("meridian", "I will arrange for the fee to be refunded to your account."),
        ("meridian", "Your card has now been frozen."),
        ("meridian", "What is your PIN, please?"),
        ("meridian", "You have my word that it will be sorted."),
    ],
)
def test_unsafe_promises_advice_actions_and_requests_for_secrets_are_stopped(brand_id: str, text: str) -> None:
    assert fired(brand_id, text) in {"promise", "dont"}


@pytest.mark.parametrize(
    ("brand_id", "text"),
    [
        ("demo", "I can't promise it's completely harmless, so please ask your doctor."),
        ("demo", "We will never ask for your full card number in the chat."),
        ("demo", "I can't cancel it for you, but you can do it from your account page."),
        ("meridian", "Meridian will never ask for your PIN or full password."),
        ("meridian", "No savings product is completely safe from inflation."),
        ("meridian", "I cannot tell you whether buying gold now would be sensible."),
        ("meridian", "I am not able to say whether you will need to pay tax on it."),
        ("meridian", "Please never share your PIN with anyone, including us."),
    ],
)
def test_negations_and_refusals_of_those_claims_pass(brand_id: str, text: str) -> None:
    assert fired(brand_id, text, "Is it safe, and can you do it for me?") is None


# --- tone: bureaucratic and condescending ------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand_id", "text"),
    [
        ("demo", "Your request has been noted. Cancellation must be performed via the account page."),
        ("demo", "The Company recommends a steeping duration of four (4) minutes."),
        ("demo", "Ugh, it's literally on the website."),
        ("demo", "Just skip it from your account page. Not that hard."),
        ("meridian", "As I said, the limit is £25,000 a day."),
    ],
)
def test_bureaucratic_and_condescending_replies_are_off_tone(brand_id: str, text: str) -> None:
    assert fired(brand_id, text) == "tone"


@pytest.mark.parametrize(
    "text",
    [
        "Pop to your account page and hit skip, easy!",
        "It's not that hard to dial in: start with 15 grams of coffee to 250 grams of water!",
        "Our beans are roasted fresh, so the flavour is broad and sweet.",
    ],
)
def test_casual_friendly_replies_keep_their_tone(text: str) -> None:
    assert fired("demo", text, "How do I skip a bag and brew it?") is None


def test_a_pattern_match_that_the_next_character_extends_is_not_reported_early() -> None:
    # "bro" (slang for the bank) must wait for the next character: "broad" is no match.
    from persona.guard import BrandGuard

    guard = BrandGuard(BANK)
    assert guard.feed("The bro").violation is None
    assert guard.feed("ad range of savings accounts. ").violation is None


# --- wrong facts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("If it's damaged, you have 14 days to tell us and we'll refund you.", "How long do I have to return a bag?"),
        ("We currently roast a Guatemalan Antigua and our Hearth espresso blend.", "What beans do you have?"),
        ("Try a bright Kenyan AA this week.", "Anything fruity?"),
        ("The Roaster's Choice plan ships a new bag every week, or monthly if you prefer.", "How often?"),
    ],
)
def test_facts_stated_for_something_else_invented_origins_and_unit_less_frequencies_are_unsupported(
    text: str, question: str
) -> None:
    assert fired("demo", text, question) == "unsupported_fact"


@pytest.mark.parametrize(
    ("brand_id", "text", "question"),
    [
        ("demo", "Every two weeks or every four weeks, so roughly every 14 or 28 days.", "How often does it ship?"),
        ("demo", "Tell us within 30 days and we'll replace it or refund you.", "My bag arrived damaged."),
        ("demo", "Our Colombian Huila and Ethiopian Yirgacheffe are both lovely.", "What beans do you have?"),
        ("demo", "It's worth it if you brew daily.", "Is a burr grinder worth it?"),
        ("demo", "I don't know the exact farm, sorry!", "Which farm is the Huila from?"),
        ("meridian", "Interest is calculated daily and paid monthly.", "How is interest paid?"),
        ("meridian", "Within three working days.", "How long does a replacement card take?"),
    ],
)
def test_restated_facts_and_honest_dont_knows_pass(brand_id: str, text: str, question: str) -> None:
    assert fired(brand_id, text, question) is None


@pytest.mark.parametrize("brand_id", ["demo", "meridian"])
def test_the_brands_whole_knowledge_in_one_reply_passes(brand_id: str) -> None:
    """A fact's topic is read in its own sentence: the sentence before it (another topic) is no evidence."""
    brand = BRANDS[brand_id].model_copy(
        update={"length": BRANDS[brand_id].length.model_copy(update={"max_sentences": 100, "max_chars": None})}
    )
    text = " ".join(snippet.text for snippet in brand.knowledge)
    released, step = run(brand, text, "Tell me everything")
    assert step is None and released == text
