"""docs/protocol.md is the wire contract inside the repository: ../shared/PROTOCOL.md word for word,
plus an appendix generated from streaming/codes.py. Regenerate with `make protocol-doc`."""

from __future__ import annotations

import pytest

from api.protocol_doc import DOC, SHARED, render, split
from streaming.codes import markdown_tables


def test_the_appendix_is_the_current_code_table() -> None:
    _, appendix = split(DOC.read_text(encoding="utf-8"))
    assert appendix == markdown_tables(), "docs/protocol.md is stale: run `make protocol-doc`"


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/PROTOCOL.md is not beside this checkout")
def test_the_contract_part_is_the_shared_protocol_word_for_word() -> None:
    contract, _ = split(DOC.read_text(encoding="utf-8"))
    assert contract == SHARED.read_text(encoding="utf-8").rstrip() + "\n", "run `make protocol-doc`"
    assert DOC.read_text(encoding="utf-8") == render(SHARED.read_text(encoding="utf-8"))
