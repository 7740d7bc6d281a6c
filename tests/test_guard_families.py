"""Off-brand replies beyond filler (issue 12): the wrong register, unsafe promises and advice, and talk
about the bot's own instructions, as families of patterns (persona/families.py) through the same
streaming machinery as the brand's own don't-patterns. Each family is tested with sentences that must
fire and at least as many good ones that must not: refusals, negations, safe mentions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from persona.brand import Brand
from persona.checks import check_text, compile_rules
from persona.families import META, PROMISE, TONE, families
from persona.guard import BrandGuard, GuardContext
from persona.loader import load_brands
from reply.ending import FALLBACK_KIND
from tests.guard_helpers import run

BRANDS = load_brands(Path(__file__).resolve().parent.parent / "brands")
DEMO, BANK = BRANDS["demo"], BRANDS["meridian"]
RULES = ("tone", "promise", "meta_talk")


def fired(brand: Brand, text: str) -> set[str]:
    return {f.rule for f in check_text(brand, text) if f.rule in RULES}


# --- tone: the register opposite the brand's -------------------------------------------------------------

BANK_SLANG = [
    "No worries, the Easy Saver pays 3.10% AER.",
    "Yep, you can freeze the card in the app.",
    "Nope, there is no fee for that.",
    "Awesome, your transfer will arrive within two hours.",
    "It is super easy to freeze a card in the app.",
    "Haha, that is a fair question about interest.",
    "We are gonna send a replacement card within three working days.",
    "Our advisers totally get it, mortgages can be confusing.",
    "Hey there, the branch opens at 9:00.",
    "Lol, the daily limit is £25,000.",
    "Folks often ask about the Fixed Saver.",
    "Yay, your card is on its way.",
    "Sorry dude, the branch is closed on Sunday.",
    "Oh no, that sounds stressful. Please freeze the card in the app.",
    "Gotcha, the limit is £25,000.",
    "Feel free to swing by the branch on Saturday.",
    "No sweat, a replacement card is sent within three working days.",
]
BANK_CONTRACTIONS = [
    "You can't withdraw from the Fixed Saver early.",
    "We're open 9:00 to 17:00 on weekdays.",
    "It's available 24 hours a day.",
    "I don\u2019t have access to your account.",
    "That's the daily online transfer limit.",
    "You'll receive a replacement within three working days.",
]
BANK_GOOD = [
    "The Easy Saver pays 3.10% AER variable on balances up to £250,000.",
    "Please freeze the card at once in the Meridian app, or call 0800 123 4567.",
    "Thank you for your question. The branch opens at 9:00 on Saturday.",
    "The customer's card is replaced within three working days.",
    "A superannuation scheme is not a product Meridian offers.",
    "Interest is calculated daily and paid monthly, in total twelve payments a year.",
    "Meridian's telephone line is available at any hour.",
    "Store the card in a cool, dry place away from magnets.",
    "I am not able to see your accounts; please use online banking.",
    "Faster Payments within the UK usually arrive within two hours.",
    "Its rate is fixed for 12 months.",
    "The supervisor at the branch can help with the mortgage appointment.",
    "I do not have that exact figure to hand.",
    "Please check the payee details before you send the payment.",
    "The app shows a notification when a payment arrives.",
]
DEMO_STIFF = [
    "We regret to inform you that the Huila is sold out.",
    "Pursuant to our returns policy, you may request a refund within 30 days.",
    "Kindly be advised that we roast on Mondays and Thursdays.",
    "Please be advised that orders over $35 ship free.",
    "Thank you, valued customer, for your order.",
    "We acknowledge receipt of your message about the damaged bag.",
    "Please reply at your earliest convenience with your order number.",
    "Do not hesitate to contact our team regarding your subscription.",
    "As per our policy, returns are accepted within 30 days.",
    "In accordance with our shipping terms, orders ship within 24 hours of roasting.",
    "The aforementioned blend is our Hearth espresso.",
    "We apologise for any inconvenience caused by the delay.",
    "Should you require further assistance, our team is available.",
    "Thank you for your patience while we look into the order.",
    "Furthermore, the Hearth blend is suitable for espresso.",
    "We appreciate your understanding regarding the delay.",
    "Kindly provide your order number.",
]
DEMO_GOOD = [
    "Go for our Colombian Huila: it's chocolatey and smooth.",
    "No worries, just tell us within 30 days and we'll replace it!",
    "Yep, you can skip next month's bag from your account page.",
    "Super easy: hit skip on your account page.",
    "Awesome choice, the Yirgacheffe is bright and floral ☕",
    "Orders over $35 ship free in the US.",
    "Hey there, coffee friend! What can I brew up for you?",
    "Per cup, use 15 grams of coffee to 250 grams of water.",
    "We roast on Mondays and Thursdays and ship within 24 hours.",
    "Please note the cafe closes at 2pm on weekends.",
    "Taxes are outside my little roastery, I'm afraid!",
    "In the event of a damaged bag, we'll replace it.",
    "Heads up: the decaf sells out fast!",
    "Thanks for your patience! Your beans ship within 24 hours of roasting.",
    "Kindness matters, and so does a fresh grind.",
]


@pytest.mark.parametrize("text", BANK_SLANG + BANK_CONTRACTIONS)
def test_slang_chummy_words_and_contractions_are_off_brand_for_the_formal_bank(text: str) -> None:
    assert "tone" in fired(BANK, text)
    _, step = run(BANK, text)
    assert step is not None and step.violation in {"tone", "banned_phrase"}  # a few are also banned there
    assert "tone" not in fired(DEMO, text), "the same words are the roaster's own register"


@pytest.mark.parametrize("text", DEMO_STIFF)
def test_legalese_and_stiff_corporate_phrases_are_off_brand_for_the_casual_roaster(text: str) -> None:
    # (where filler or a banned phrase matches at the same place, that rule is the one reported)
    assert {f.rule for f in check_text(DEMO, text)} & {"tone", "filler", "banned_phrase"}
    _, step = run(DEMO, text)
    assert step is not None and step.violation in {"tone", "banned_phrase", "filler"}
    assert "tone" not in fired(BANK, text) or "contractions" in text, "a bank may write formally"


@pytest.mark.parametrize("text", BANK_GOOD)
def test_the_banks_formal_sentences_are_its_register(text: str) -> None:
    assert not fired(BANK, text)


@pytest.mark.parametrize("text", DEMO_GOOD)
def test_the_roasters_casual_sentences_are_its_register(text: str) -> None:
    assert not fired(DEMO, text)


def test_a_neutral_brand_has_no_register_families_and_contractions_are_allowed_by_default() -> None:
    neutral = BANK.model_copy(update={"voice": BANK.voice.model_copy(update={"formality": "neutral"})})
    assert not fired(neutral, "Awesome, we're open at 9:00.") - {"tone"} and "tone" in fired(neutral, "we're")
    relaxed = neutral.model_copy(update={"voice": neutral.voice.model_copy(update={"contractions": True})})
    assert not fired(relaxed, "Awesome, we're open at 9:00. Pursuant to the terms, yes.")


# --- promise: guarantees, invented offers, advice ------------------------------------------------------

PROMISES = [
    (DEMO, "I guarantee your beans will arrive by Friday."),
    (DEMO, "We promise it will arrive by Friday."),
    (DEMO, "Your order will definitely arrive tomorrow."),
    (DEMO, "It's guaranteed to arrive before the weekend."),
    (DEMO, "I promise you'll love the Huila."),
    (DEMO, "We offer a 100% money-back guarantee on every bag."),
    (DEMO, "I'll give you a 20% discount on your next bag."),
    (DEMO, "I can send you a coupon for a free bag."),
    (DEMO, "Just use the promo code at checkout."),
    (DEMO, "Enter the code BEANS20 for free shipping."),
    (DEMO, "I'll issue you a full refund right away."),
    (DEMO, "Your order will arrive tomorrow."),
    (DEMO, "Your beans will definitely arrive by Friday."),
    (DEMO, "Don't worry, I'll make sure it gets there on time."),
    (DEMO, "I'll throw in a free sample with your next bag."),
    (DEMO, "I've gone ahead and cancelled your subscription."),
    (DEMO, "I can refund your order right now."),
    (DEMO, "Coffee is good for your heart, so enjoy a third cup."),
    (BANK, "Your savings are completely safe with us."),
    (BANK, "You will definitely be approved for the mortgage."),
    (BANK, "I have unblocked your card."),
    (DEMO, "Coffee is perfectly safe during pregnancy."),
    (DEMO, "It's totally fine to drink a few cups while you're pregnant."),
    (DEMO, "You can safely drink 6 cups a day."),
    (BANK, "With rates this high, you should invest in the Fixed Saver now."),
    (BANK, "You should buy bitcoin while it is cheap."),
    (BANK, "I would recommend investing in an index fund."),
    (BANK, "I would recommend you buy shares now."),
    (BANK, "You should put your savings into the Fixed Saver."),
    (BANK, "The Fixed Saver is a safe investment for your pension."),
    (BANK, "Now is a great time to invest."),
    (BANK, "The Fixed Saver is a risk-free way to grow your money."),
    (BANK, "You will not pay any tax on this interest."),
    (BANK, "Legally, you can withhold the payment."),
    (BANK, "You can deduct the fee from your taxes."),
    (BANK, "We guarantee the transfer arrives today."),
    (BANK, "Your money is 100% safe with us."),
]
PROMISES_GOOD = [
    (DEMO, "We can't promise a delivery day, but we ship within 24 hours of roasting."),
    (DEMO, "I can't guarantee it arrives Friday; tracking lands in your inbox."),
    (DEMO, "We don't have any discount codes right now."),
    (DEMO, "I'm not able to give you a discount, but orders over $35 ship free."),
    (DEMO, "Tell us within 30 days and we'll replace it or refund you."),
    (DEMO, "We'll replace it or refund you, no need to send the beans back."),
    (DEMO, "You should buy a burr grinder: it makes a big difference."),
    (DEMO, "I'd recommend the Hearth blend for espresso."),
    (DEMO, "You should invest in a good scale for pour-over."),
    (DEMO, "I can't give medical advice about caffeine; your doctor is the one to ask."),
    (DEMO, "Our Swiss Water decaf still tastes like coffee."),
    (DEMO, "A fresh bag every two or four weeks, and you can pause anytime."),
    (DEMO, "Use 15 grams of coffee to 250 grams of water."),
    (DEMO, "It is the Hearth blend, I promise."),
    (DEMO, "The Huila is a good bet for a chocolatey pour-over."),
    (DEMO, "A burr grinder is a great investment for better coffee."),
    (DEMO, "I'd recommend buying the Hearth blend for espresso."),
    (DEMO, "I'd recommend investing in a decent kettle."),
    (BANK, "I am not able to say whether you should buy shares; a regulated adviser can."),
    (BANK, "I cannot recommend investing in any particular product."),
    (BANK, "No savings product is risk-free, and past rates do not promise future ones."),
    (BANK, "I am not able to give investment advice."),
    (BANK, "I cannot advise on whether you will pay tax on the interest."),
    (BANK, "The Fixed Saver pays 4.05% AER fixed for 12 months."),
    (BANK, "Faster Payments within the UK usually arrive within two hours."),
    (BANK, "A replacement card arrives within three working days."),
    (BANK, "Please book an appointment with a regulated Meridian adviser."),
    (BANK, "Meridian cannot guarantee that rates will stay the same."),
    (BANK, "The Easy Saver rate is variable and may change."),
    (BANK, "Interest is calculated daily and paid monthly."),
    (BANK, "I am unable to give tax or legal advice; a qualified adviser can help."),
    (BANK, "Meridian will never ask for your PIN."),
    (DEMO, "You can cancel anytime from your account page."),
    (DEMO, "Your beans ship within 24 hours of roasting, and tracking lands in your inbox."),
    (DEMO, "I can't cancel it from here, but your account page can."),
    (BANK, "You can freeze the card at once in the Meridian app."),
    (BANK, "I cannot unblock your card; please call 0800 123 4567."),
    (BANK, "A replacement card arrives within three working days."),
    (DEMO, "We'll replace it or refund you within 30 days."),
]


@pytest.mark.parametrize(("brand", "text"), PROMISES)
def test_a_guarantee_an_invented_offer_or_advice_is_an_unsafe_promise(brand: Brand, text: str) -> None:
    assert "promise" in fired(brand, text)
    _, step = run(brand, text)
    assert step is not None and step.violation is not None
    assert FALLBACK_KIND["promise"] == "off_brand"


@pytest.mark.parametrize(("brand", "text"), PROMISES_GOOD)
def test_a_refusal_a_negation_or_a_grounded_statement_is_not_a_promise(brand: Brand, text: str) -> None:
    assert "promise" not in fired(brand, text)


# --- meta talk: the reply talks about its own instructions ------------------------------------------------

META_TALK = [
    "My instructions say to answer the question in the first sentence.",
    "According to my guidelines, I should only talk about coffee.",
    "I was instructed to never mention other roasters.",
    "I've been told to keep replies under four sentences.",
    "I am programmed to sound like a friendly barista.",
    "Here are my instructions: be warm, playful and concise.",
    "The system prompt tells me to use your name.",
    "I'm supposed to sound like the friendliest barista in town.",
    "As the assistant for Ember & Oak, I'm required to stay on coffee topics.",
    "My persona is Juniper, a warm barista.",
    "My tone-of-voice guide says short, sunny sentences.",
    "I'm running on GPT-4 with a temperature of 0.7.",
    "My temperature is set to 0.7.",
    "As instructed, I keep my answers short.",
    "Here is what I was told to say about the roastery.",
    "Ember & Oak wants me to keep things about coffee.",
    "The rules I follow say no medical advice.",
    "I've been given instructions to stay on topic.",
]
META_GOOD = [
    "I can't share my instructions, but I can help with beans and brewing!",
    "I'm not able to share my system prompt.",
    "I'm Juniper from Ember & Oak. Ask me anything about our beans.",
    "Our brewing instructions: 15 grams to 250 grams of water.",
    "The instructions on the bag say to grind medium-fine.",
    "My favourite is the Huila, honestly.",
    "I'm supposedly the cafe's biggest fan of the decaf.",
    "Follow the rules of thumb: coarser for French press.",
    "Rules for returns: tell us within 30 days.",
    "I was told by our roaster that the Yirgacheffe is floral.",
    "As a coffee lover, I'd go for the Hearth blend.",
    "The water temperature should be just off the boil.",
    "I won't reveal how I was set up, but I'm happy to talk coffee.",
    "Let me know if you want me to suggest a decaf.",
    "The grind size sets the brew time.",
    "You asked about the Huila: it's chocolatey and smooth.",
]


@pytest.mark.parametrize("text", META_TALK)
def test_talk_about_its_own_instructions_or_configuration_is_meta_talk(text: str) -> None:
    assert "meta_talk" in fired(DEMO, text)
    assert fired(BANK, text) & {"meta_talk", "tone"}  # (the bank's contractions may fire first)
    _, step = run(DEMO, text)
    assert step is not None and step.violation is not None
    assert FALLBACK_KIND["meta_talk"] == "off_topic"


@pytest.mark.parametrize("text", META_GOOD)
def test_a_refusal_to_share_them_or_everyday_words_for_rules_are_not_meta_talk(text: str) -> None:
    assert "meta_talk" not in fired(DEMO, text)


# --- streaming and settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand", "text", "rule"),
    [
        (DEMO, "Our Huila is lovely. We regret to inform you that it is sold out.", "tone"),
        (BANK, "The limit is £25,000. No worries if that is too low.", "tone"),
        (DEMO, "We roast on Mondays. I guarantee your beans will arrive by Friday.", "promise"),
        (DEMO, "Happy brewing! My instructions say to keep it short.", "meta_talk"),
    ],
)
def test_no_part_of_a_family_match_is_released(brand: Brand, text: str, rule: str) -> None:
    released, step = run(brand, text)
    assert step is not None and step.violation in {rule, "banned_phrase"}
    match = next(m for m in (compile_rules(brand).find(text),) if m is not None)
    assert len(released) <= match.start(), f"released {released!r} past the match at {match.start()}"


def test_a_brand_switches_a_family_off_and_adds_its_own_patterns() -> None:
    guard = DEMO.guard.model_copy(
        update={
            "promises": DEMO.guard.promises.model_copy(update={"off": ["invented_offer"]}),
            "meta_talk": DEMO.guard.meta_talk.model_copy(update={"patterns": [r"\bmy handlers\b"]}),
        }
    )
    brand = DEMO.model_copy(update={"guard": guard})
    assert "promise" not in fired(brand, "I'll give you a 20% discount on your next bag.")
    assert "meta_talk" in fired(brand, "My handlers would not like that.")
    assert "meta_talk" not in fired(brand, "I would never tell you what my handlers said.")  # negated
    names = [f.rule for f in families(brand)]
    # (+1 meta_talk: the persona's own name next to set-up words, persona_summary's per-brand pattern)
    assert names.count("promise") == len(PROMISE) - 1 and names.count("meta_talk") == len(META) + 2
    assert names.count("tone") == 3  # casual: legalese, corporate and bureaucratic (condescending: phrases)
    assert set(compile_rules(brand).names.values()) >= {"promise", "meta_talk", "tone"}


def test_a_bad_family_pattern_or_family_name_is_refused_when_the_file_loads() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        DEMO.guard.tone.model_validate({"patterns": ["(unclosed"]})
    with pytest.raises(ValueError):
        DEMO.guard.tone.model_validate({"off": ["shouting"]})
    assert set(TONE) >= {"slang", "chummy", "contractions", "legalese", "corporate"}


def test_the_shipped_brands_own_words_pass_the_new_families() -> None:
    for brand in (DEMO, BANK):
        texts = [e.assistant for e in brand.examples] + [s.text for s in brand.knowledge]
        texts += [brand.fallbacks.off_topic, brand.fallbacks.off_brand, brand.greeting]
        for text in texts:
            assert not fired(brand, text), text


# --- off-topic: only a reply in the vocabulary's language is judged lexically -----------------------------


def fallback_on_off_topic(brand: Brand) -> Brand:
    check = brand.guard.off_topic.model_copy(update={"action": "fallback"})
    return brand.model_copy(update={"guard": brand.guard.model_copy(update={"off_topic": check})})


OTHER_LANGUAGE_GOOD = [
    ("¿Cuándo tostáis?", "¡Tostamos los lunes y los jueves, y enviamos en 24 horas!"),
    ("¿Puedo pausar mi suscripción?", "¡Claro! Puedes pausarla, saltar un envío o cancelarla cuando quieras."),
    ("Hola", "¡Hola! Soy Juniper. ¿En qué te ayudo hoy?"),
    ("Gracias", "¡De nada! Disfruta tu café."),
    ("Quand torréfiez-vous ?", "Nous torréfions le lundi et le jeudi, et expédions sous 24 heures."),
    ("Bonjour", "Bonjour ! Je suis Juniper. Que puis-je faire pour vous ?"),
    ("Merci", "Avec plaisir, bonne dégustation !"),
    ("Wie lange soll ich die French Press ziehen lassen?", "Grob mahlen und vier Minuten ziehen lassen, dann drücken."),
    ("Kann ich mein Abo pausieren?", "Klar! Du kannst es jederzeit in deinem Konto pausieren oder kündigen."),
    ("Danke", "Gern geschehen, viel Spaß beim Brühen!"),
]


@pytest.mark.parametrize(("question", "reply"), OTHER_LANGUAGE_GOOD)
def test_a_good_reply_in_another_language_than_the_vocabulary_is_not_judged_off_topic(
    question: str, reply: str
) -> None:
    brand = fallback_on_off_topic(DEMO)
    guard = BrandGuard(brand, GuardContext(question=question))
    for piece in re.findall(r"\S+\s*", reply):
        assert guard.feed(piece).violation is None
    end = guard.finish("stop")
    assert end.violation is None and not [n for n in end.notes if n.event == "off_topic"]


def test_an_english_reply_off_the_domain_is_still_judged_and_replaced() -> None:
    brand = fallback_on_off_topic(DEMO)
    reply = "Layer fresh pasta with a slow-simmered ragu and bechamel, then bake it until golden on top."
    guard = BrandGuard(brand, GuardContext(question="How do I make lasagna?"))
    for piece in re.findall(r"\S+\s*", reply):
        assert guard.feed(piece).violation is None
    assert guard.finish("stop").violation == "off_topic"


def test_a_reply_in_a_language_the_brand_does_not_speak_is_still_judged_off_topic() -> None:
    # The bank answers in English only: its coverage check stays a backstop for the language check.
    brand = BANK.model_copy(
        update={
            "guard": BANK.guard.model_copy(
                update={"language": BANK.guard.language.model_copy(update={"action": "off"})}
            )
        }
    )
    reply = "Pour la lasagne, superposez les pâtes fraîches avec la sauce, puis faites cuire au four."
    guard = BrandGuard(brand, GuardContext(question="Comment faire une lasagne ?"))
    for piece in re.findall(r"\S+\s*", reply):
        assert guard.feed(piece).violation is None
    assert guard.finish("stop").violation == "off_topic"
