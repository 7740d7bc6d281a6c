"""Every setting is documented in the README's configuration table (api/settings.py says: keep the two in step)."""

from __future__ import annotations

import re

from api.settings import PROJECT_ROOT, Settings


def test_every_setting_has_a_row_in_the_readmes_configuration_table() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`(?: / `([A-Z][A-Z0-9_]+)`)?", table, re.MULTILINE))
    names = {name for pair in documented for name in pair if name}
    missing = [field.upper() for field in Settings.model_fields if field.upper() not in names]
    assert missing == []
