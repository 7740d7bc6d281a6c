"""Signed-in users (issue 13 part 2, ``identify``; api/identity.py, docs/security.md "Signed-in users"):
the brand's backend signs a user id with its identity secret, negotiate verifies the HMAC, and an
unsigned or wrongly signed identity is never trusted. Real servers, the memory store and Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from loguru import logger
from pydantic import ValidationError

from api.exceptions import IdentityInvalid
from api.identity import UserClaim, parse_identity_secrets, user_hash, verify_user
from api.settings import PROJECT_ROOT, InsecureSettings, Settings
from testkit import T
from testkit.clients import ws_turn
from testkit.server import SECRET, ServerFactory

pytestmark = pytest.mark.timeout(60)

DEMO_SECRET = "demo-identity-secret-of-the-tests-0123456789abcdef"
MERIDIAN_SECRET = "meridian-identity-secret-of-the-tests-0123456789ab"
IDENTITY = {"identity_secrets": f"demo={DEMO_SECRET},meridian={MERIDIAN_SECRET}"}


def signed(user_id: str, secret: str = DEMO_SECRET, **extra: Any) -> dict[str, Any]:
    """The ``user`` a page sends: the id and the hash its brand's backend computed."""
    return {"id": user_id, "hash": user_hash(secret, user_id), **extra}


def claims(token: str) -> dict[str, Any]:
    body = token.split(".", 1)[0]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=["memory", "redis"])
def buffer_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    sink = logger.add(lambda m: lines.append(json.loads(m)["record"]), serialize=True, level="INFO")
    yield lines
    logger.remove(sink)


# --- the HMAC, without a server -------------------------------------------------------------------------


def test_the_user_hash_is_the_hex_hmac_sha256_of_the_user_id_under_the_brands_secret() -> None:
    expected = hmac.new(DEMO_SECRET.encode(), b"user-42", hashlib.sha256).hexdigest()
    assert user_hash(DEMO_SECRET, "user-42") == expected
    user = verify_user((DEMO_SECRET.encode(),), "demo", UserClaim(**signed("user-42", name=" Ann ")))
    assert (user.id, user.name) == ("user-42", "Ann")
    upper = UserClaim(id="user-42", hash=expected.upper())
    assert verify_user((DEMO_SECRET.encode(),), "demo", upper).id == "user-42"


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        ({"id": "user-42"}, "required"),
        ({"id": "user-42", "hash": ""}, "required"),
        ({"id": "user-42", "hash": "not-hex"}, "64 hex"),
        ({"id": "user-42", "hash": user_hash(DEMO_SECRET, "user-43")}, "does not match"),  # another user's hash
        ({"id": "user-42", "hash": user_hash(MERIDIAN_SECRET, "user-42")}, "does not match"),  # another brand's
        ({"id": "user-42 ", "hash": user_hash(DEMO_SECRET, "user-42")}, "does not match"),  # the exact id is signed
        (signed("user-42", email="not an address"), "email"),
    ],
)
def test_an_unsigned_or_wrongly_signed_identity_is_refused(claim: dict[str, Any], why: str) -> None:
    with pytest.raises(IdentityInvalid, match=why) as caught:
        verify_user((DEMO_SECRET.encode(),), "demo", UserClaim(**claim))
    assert caught.value.code == "identity_invalid" and caught.value.http_status == 401


def test_a_brand_without_an_identity_secret_verifies_nobody() -> None:
    with pytest.raises(IdentityInvalid, match="not configured"):
        verify_user((), "demo", UserClaim(**signed("user-42")))


def test_a_unicode_user_id_is_signed_as_utf8() -> None:
    user_id = "Zoë-ユーザー-😀"
    expected = hmac.new(DEMO_SECRET.encode(), user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    assert verify_user((DEMO_SECRET.encode(),), "demo", UserClaim(id=user_id, hash=expected)).id == user_id


def test_while_rotating_a_brand_lists_two_secrets_and_both_verify() -> None:
    keys = parse_identity_secrets(f"demo=old-secret,meridian={MERIDIAN_SECRET},demo=new-secret")
    assert keys["demo"] == (b"old-secret", b"new-secret")
    for secret in ("old-secret", "new-secret"):
        assert verify_user(keys["demo"], "demo", UserClaim(**signed("u", secret))).id == "u"
    as_json = parse_identity_secrets(json.dumps({"demo": ["old-secret", "new-secret"], "meridian": "m"}))
    assert as_json == {"demo": (b"old-secret", b"new-secret"), "meridian": (b"m",)}


@pytest.mark.parametrize("raw", ["demo", "=secret", "demo=", "{not json", '["demo"]', '{"demo": 3}'])
def test_malformed_identity_secrets_stop_the_settings(raw: str) -> None:
    with pytest.raises(ValidationError, match="IDENTITY_SECRETS"):
        Settings(app_env="dev", identity_secrets=raw)


def test_identity_secrets_fail_closed_outside_dev_and_never_show_in_a_repr() -> None:
    production = {"app_env": "production", "session_secret": SECRET}
    with pytest.raises(InsecureSettings, match="brand 'demo' is shorter than 32 bytes"):
        Settings(**production, identity_secrets="demo=short").check_secrets()
    with pytest.raises(InsecureSettings, match="published placeholder"):
        Settings(**production, identity_secrets="demo=change-me-to-a-long-random-string").check_secrets()
    settings = Settings(**production, identity_secrets=f"demo={DEMO_SECRET}")
    settings.check_secrets()
    assert DEMO_SECRET not in repr(settings) and DEMO_SECRET not in str(settings.model_dump())
    Settings(app_env="dev", identity_secrets="demo=short").check_secrets()  # dev mode lets it be


# --- negotiate, history, logs: a real server -------------------------------------------------------------


async def test_a_verified_user_is_in_the_token_the_answer_the_history_and_the_logs(
    servers: ServerFactory, log_lines: list[dict[str, Any]]
) -> None:
    server = await servers(**IDENTITY)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        response = await http.post(
            "/v1/negotiate", json={"brand": "demo", "user": signed("user-42", name="Ann", email="ann@example.com")}
        )
        assert response.status_code == 200, response.text
        n = response.json()
        assert n["user"] == {"id": "user-42", "name": "Ann"}
        token_claims = claims(n["token"])
        assert (token_claims["u"], token_claims["un"]) == ("user-42", "Ann")
        assert "ann@example.com" not in json.dumps(token_claims)  # the email is checked, not kept
        await ws_turn(server.ws_url, n, "How long does shipping take?")
        history = (await http.get(f"/v1/conversations/{n['conversation_id']}", headers=bearer(n["token"]))).json()
    assert history["user"] == {"id": "user-42", "name": "Ann"}
    assert [t["role"] for t in history["turns"]] == ["user", "assistant"]
    identified = [r for r in log_lines if r["message"].startswith("identified user")]
    assert identified and identified[0]["extra"]["user_id"] == "user-42"
    assert identified[0]["extra"]["conversation_id"] == n["conversation_id"]
    assert "ann@example.com" not in json.dumps(log_lines)


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"id": "user-42", "hash": user_hash(DEMO_SECRET, "user-7")}, "does not match"),  # replayed hash
        ({"id": "user-42"}, "user.hash is required"),
        (signed("user-42", MERIDIAN_SECRET), "does not match"),  # another brand's secret
        ({"id": "user-42", "hash": "0" * 64}, "does not match"),
    ],
)
async def test_negotiate_refuses_an_unsigned_or_wrongly_signed_identity_with_identity_invalid(
    servers: ServerFactory, user: dict[str, Any], message: str
) -> None:
    server = await servers(**IDENTITY)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        response = await http.post("/v1/negotiate", json={"brand": "demo", "user": user})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "identity_invalid" and message in error["message"]


async def test_a_server_without_identity_secrets_refuses_every_identity_and_serves_anonymous_chats(
    servers: ServerFactory,
) -> None:
    server = await servers()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        refused = await http.post("/v1/negotiate", json={"brand": "demo", "user": signed("user-42")})
        anonymous = await http.post("/v1/negotiate", json={"brand": "demo"})
    assert refused.status_code == 401 and "not configured" in refused.json()["error"]["message"]
    assert (
        anonymous.status_code == 200 and "user" not in anonymous.json() and "u" not in claims(anonymous.json()["token"])
    )


async def test_a_unicode_user_id_round_trips_through_negotiate_and_history(servers: ServerFactory) -> None:
    server = await servers(**IDENTITY)
    user_id = "Zoë-ユーザー-😀"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        n = (await http.post("/v1/negotiate", json={"brand": "demo", "user": signed(user_id)})).json()
        history = (await http.get(f"/v1/conversations/{n['conversation_id']}", headers=bearer(n["token"]))).json()
    assert n["user"] == {"id": user_id} and history["user"] == {"id": user_id}


async def test_a_conversation_of_user_a_is_never_continued_as_user_b(servers: ServerFactory, buffer_url: str) -> None:
    # Two instances sharing the store (Redis) or one (memory): the binding holds on both.
    first = await servers(**IDENTITY, buffer_url=buffer_url)
    other = await servers(**IDENTITY, buffer_url=buffer_url) if buffer_url != "memory://" else first
    async with (
        httpx.AsyncClient(base_url=first.base_url, timeout=5 * T) as http,
        httpx.AsyncClient(base_url=other.base_url, timeout=5 * T) as http2,
    ):
        # An anonymous chat, then Ann signs in: the same conversation is bound to her.
        anonymous = (await http.post("/v1/negotiate", json={"brand": "demo"})).json()
        conversation = anonymous["conversation_id"]
        cont = {"brand": "demo", "conversation_id": conversation}
        bound = await http.post("/v1/negotiate", json={**cont, "token": anonymous["token"], "user": signed("ann")})
        assert bound.status_code == 200 and bound.json()["conversation_id"] == conversation
        ann = bound.json()

        # Bob with Ann's token: refused, whatever instance he asks.
        bob = await http2.post("/v1/negotiate", json={**cont, "token": ann["token"], "user": signed("bob")})
        assert bob.status_code == 403 and "another user" in bob.json()["error"]["message"]
        # Bob with the token from before Ann signed in (no user in it): the server-side binding refuses.
        bob = await http2.post("/v1/negotiate", json={**cont, "token": anonymous["token"], "user": signed("bob")})
        assert bob.status_code == 403

        # Ann's own tab refreshing without identifying again stays Ann's; identifying again is fine.
        refresh = (await http2.post("/v1/negotiate", json={**cont, "token": ann["token"]})).json()
        assert refresh["user"] == {"id": "ann"} and claims(refresh["token"])["u"] == "ann"
        again = await http2.post("/v1/negotiate", json={**cont, "token": refresh["token"], "user": signed("ann")})
        assert again.status_code == 200
        history = await http2.get(f"/v1/conversations/{conversation}", headers=bearer(again.json()["token"]))
        assert history.json()["user"] == {"id": "ann"}

        # Bob without a conversation id gets a conversation of his own.
        own = (await http2.post("/v1/negotiate", json={"brand": "demo", "user": signed("bob")})).json()
        assert own["conversation_id"] != conversation and own["user"] == {"id": "bob"}


async def test_the_locale_hint_is_kept_on_the_conversation_and_a_bad_one_is_a_422(servers: ServerFactory) -> None:
    server = await servers()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        n = (await http.post("/v1/negotiate", json={"brand": "demo", "locale": "es"})).json()
        assert n["locale"] == "es" and claims(n["token"])["l"] == "es"
        cont = {"brand": "demo", "conversation_id": n["conversation_id"], "token": n["token"]}
        kept = (await http.post("/v1/negotiate", json=cont)).json()
        assert kept["locale"] == "es"
        changed = (await http.post("/v1/negotiate", json={**cont, "token": kept["token"], "locale": "pt-BR"})).json()
        assert changed["locale"] == "pt-BR"
        history = await http.get(f"/v1/conversations/{n['conversation_id']}", headers=bearer(changed["token"]))
        assert history.json()["locale"] == "pt-BR"
        for bad in ("", "english please", "e", "x" * 40):
            response = await http.post("/v1/negotiate", json={"brand": "demo", "locale": bad})
            assert response.status_code == 422, bad
        # JSON's lone-surrogate escapes are refused as malformed (422), never a 500 when hashed or echoed.
        for raw in (
            '{"brand": "demo", "user": {"id": "\\ud800", "hash": "%s"}}' % ("0" * 64),
            '{"brand": "demo", "locale": "\\ud800"}',
        ):
            response = await http.post("/v1/negotiate", content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, raw
        plain = (await http.post("/v1/negotiate", json={"brand": "demo"})).json()
    assert "locale" not in plain and "user" not in plain  # a 1.0 client sees the 1.0 answer


# --- the snippets docs/client.md gives brands compute what the server checks ------------------------------


def _doc_snippet(language: str) -> str:
    doc = (PROJECT_ROOT / "docs" / "client.md").read_text(encoding="utf-8")
    section = doc.split("### Signed-in users", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, f"one {language} snippet expected in docs/client.md"
    return "\n".join(line.strip() for line in blocks[0].splitlines())


def test_the_documented_python_snippet_computes_the_hash_the_server_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRANDCHAT_IDENTITY_SECRET", DEMO_SECRET)
    scope: dict[str, Any] = {"user": SimpleNamespace(id="Zoë-ユーザー-😀")}
    exec(_doc_snippet("python"), scope)
    assert scope["user_hash"] == user_hash(DEMO_SECRET, "Zoë-ユーザー-😀")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_node_snippet_computes_the_hash_the_server_checks() -> None:
    script = "const user = { id: process.argv[1] };\n" + _doc_snippet("js") + "\nconsole.log(userHash);"
    out = subprocess.run(
        ["node", "-e", script, "Zoë-ユーザー-😀"],
        env={**os.environ, "BRANDCHAT_IDENTITY_SECRET": DEMO_SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.strip() == user_hash(DEMO_SECRET, "Zoë-ユーザー-😀")
