"""Brand files: the shipped brands load, bad files fail whole with file, field and line, the JSON
Schema is up to date, API keys come from the environment, and brands really differ."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from persona.loader import BrandFileError, load_brand, load_brands, parse_brand
from persona.schema import SCHEMA_PATH, brand_schema, render
from persona.text import count_sentences

BRANDS = Path(__file__).resolve().parent.parent / "brands"
DEMO = (BRANDS / "demo.yaml").read_text()


def write(tmp_path: Path, text: str, name: str = "demo") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_the_shipped_brands_load_and_have_sharply_different_voices() -> None:
    brands = load_brands(BRANDS)
    assert set(brands) == {"demo", "meridian"}
    demo, bank = brands["demo"], brands["meridian"]
    assert set(demo.voice.traits).isdisjoint(bank.voice.traits)
    assert demo.emoji.policy == "sparingly" and bank.emoji.policy == "none"
    assert demo.guard.off_topic.action == "fallback" and bank.guard.off_topic.action == "fallback"
    assert any(d.pattern == "!" for d in bank.rules.dont), "the bank forbids exclamation marks"
    assert "!" in demo.greeting and "!" not in bank.greeting
    # Every canned reply respects the brand's own length policy.
    for brand in brands.values():
        for example in brand.examples:
            assert count_sentences(example.assistant) <= brand.length.max_sentences, example.assistant


def test_the_demo_brand_keeps_its_knowledge_topics() -> None:
    demo = load_brand(BRANDS / "demo.yaml")
    assert {s.topic for s in demo.knowledge} >= {"shipping", "subscriptions", "brewing", "beans", "returns", "hours"}


def test_the_committed_json_schema_is_generated_from_the_model() -> None:
    assert SCHEMA_PATH.read_text() == render(), "run `python -m persona.schema` and commit brands/brand.schema.json"


@pytest.mark.parametrize("name", ["demo", "meridian"])
def test_shipped_brand_files_validate_against_the_json_schema(name: str) -> None:
    raw = yaml.safe_load((BRANDS / f"{name}.yaml").read_text())
    jsonschema.validate(raw, json.loads(SCHEMA_PATH.read_text()))


def test_the_json_schema_rejects_an_unknown_field_as_editors_would_show_it() -> None:
    raw = yaml.safe_load(DEMO)
    raw["voice"]["tone"] = "loud"
    with pytest.raises(jsonschema.ValidationError, match="tone"):
        jsonschema.validate(raw, brand_schema())


def test_a_bad_field_is_reported_with_file_field_and_line(tmp_path: Path) -> None:
    text = DEMO.replace("  max_sentences: 4", "  max_sentences: lots")
    line = next(i for i, ln in enumerate(text.splitlines(), start=1) if "max_sentences: lots" in ln)
    path = write(tmp_path, text)
    with pytest.raises(BrandFileError) as caught:
        load_brand(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"length.max_sentences (line {line})" in message
    assert caught.value.problems[0][:2] == ("length.max_sentences", line)


def test_every_problem_is_reported_at_once_and_a_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    text = DEMO.replace("persona_name: Juniper\n", "").replace("  temperature: 0.7", "  temperature: 9")
    with pytest.raises(BrandFileError) as caught:
        load_brand(write(tmp_path, text))
    fields = {field for field, _, _ in caught.value.problems}
    assert fields == {"persona_name", "model.temperature"}


def test_an_unknown_field_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    text = DEMO.replace("greeting:", "greting: hi\ngreeting:")
    with pytest.raises(BrandFileError, match=r"greting \(line \d+\): Extra inputs are not permitted"):
        load_brand(write(tmp_path, text))


def test_a_dont_rule_with_an_invalid_pattern_is_rejected(tmp_path: Path) -> None:
    text = DEMO.replace(r"pattern: (?-i:\b[A-Z]", r"pattern: (?-i:\b([A-Z]")
    with pytest.raises(BrandFileError, match=r"rules\.dont\.2\.pattern \(line \d+\): .*not a valid regular expression"):
        load_brand(write(tmp_path, text))


def test_a_brand_whose_own_fallback_breaks_its_rules_fails_to_load(tmp_path: Path) -> None:
    text = DEMO.replace('  - "valued customer"', '  - "valued customer"\n  - "let me start that one over"')
    with pytest.raises(BrandFileError, match=r"fallbacks\.off_brand \(line \d+\): breaks the brand's own rule banned"):
        load_brand(write(tmp_path, text))


def test_the_file_name_must_match_the_id(tmp_path: Path) -> None:
    with pytest.raises(BrandFileError, match=r"id \(line 6\): 'demo' does not match the file name 'other'"):
        load_brand(write(tmp_path, DEMO, name="other"))


def test_not_yaml_and_not_a_mapping_are_readable_errors(tmp_path: Path) -> None:
    with pytest.raises(BrandFileError, match="not valid YAML"):
        parse_brand("id: [unclosed", tmp_path / "x.yaml")
    with pytest.raises(BrandFileError, match="must hold a mapping"):
        parse_brand("- a list", tmp_path / "x.yaml")


def test_one_bad_file_fails_the_whole_directory(tmp_path: Path) -> None:
    write(tmp_path, DEMO)
    write(tmp_path, "id: broken\n", name="broken")
    with pytest.raises(BrandFileError, match=r"broken\.yaml"):
        load_brands(tmp_path)


def test_the_api_key_comes_from_the_named_variable_with_the_dev_key_only_as_a_fallback(tmp_path: Path) -> None:
    path = write(tmp_path, DEMO)
    assert load_brand(path, environ={}, dev_keys=True).api_key == "dev-demo-key-not-secret"
    assert load_brand(path, environ={}).api_key is None, "the published dev key opens nothing outside dev mode"
    assert load_brand(path, environ={"DEMO_BRAND_API_KEY": "sk-real"}).api_key == "sk-real"
    bank = load_brand(BRANDS / "meridian.yaml", environ={})
    assert bank.api_key is None, "no dev key: the endpoint is closed until the variable is set"
    assert load_brand(BRANDS / "meridian.yaml", environ={"MERIDIAN_BRAND_API_KEY": "k"}).api_key == "k"


def test_allowed_origins_empty_means_any_and_a_list_means_only_those() -> None:
    brands = load_brands(BRANDS)
    assert brands["demo"].origin_allowed("https://anything.example")
    assert brands["meridian"].origin_allowed("https://www.meridian.example")
    assert not brands["meridian"].origin_allowed("https://evil.example")
