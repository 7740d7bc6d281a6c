"""One wire vocabulary: the error and close-code table (streaming/codes.py) is the only one, every
error class the edges raise is in it, and the browser client's table says the same."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import api.exceptions
import reply.exceptions
import streaming.exceptions
from streaming.codes import CLOSE_CODES, ERROR_CODES, Close, WireError, error_code

ROOT = Path(__file__).resolve().parent.parent


def wire_error_classes() -> list[type[WireError]]:
    found: list[type[WireError]] = []
    for module in (api.exceptions, reply.exceptions, streaming.exceptions):
        found += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, WireError)]
    return found


@pytest.mark.parametrize("cls", wire_error_classes(), ids=lambda c: c.__name__)
def test_every_error_a_client_can_see_has_a_row_in_the_table(cls: type[WireError]) -> None:
    assert cls.code in ERROR_CODES
    exc = cls("why", stream_id="s_1")
    assert exc.http_status == ERROR_CODES[cls.code].http_status
    assert repr(exc) == f"{cls.__name__}(code={cls.code!r}, message='why', stream_id='s_1')"


def test_the_codes_of_protocol_1_1_are_in_the_table_with_their_statuses() -> None:
    assert error_code("buffer_unavailable").retryable
    assert error_code("rate_limited").http_status == 429
    assert error_code("conversation_busy").http_status == 409
    assert error_code("payload_too_large").http_status == 413
    assert error_code("no such code").code == "internal"


def test_every_close_code_an_error_maps_to_is_one_the_client_knows_or_internal() -> None:
    for entry in ERROR_CODES.values():
        if entry.ws_close is not None:
            assert entry.ws_close in CLOSE_CODES or entry.ws_close is Close.INTERNAL, entry


def test_the_protocol_names_every_close_code_the_server_sends() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    for code in CLOSE_CODES:
        assert str(int(code)) in protocol, f"close {int(code)} is not in docs/protocol.md"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (make test installs nothing for it)")
def test_the_browser_clients_close_code_table_equals_the_servers() -> None:
    script = 'console.log(JSON.stringify(require("./static/chat-client.js").CLOSE_CODES))'
    out = subprocess.run(["node", "-e", script], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    js = {int(code): name for code, name in json.loads(out.stdout).items()}
    assert js == {int(code): name for code, name in CLOSE_CODES.items()}
