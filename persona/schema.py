"""``python -m persona.schema``: write ``brands/brand.schema.json`` from :class:`persona.brand.Brand`.

Editors (VS Code's YAML extension, JetBrains) validate brand files against it as you type; the
first line of each shipped brand file points at it. ``tests/test_persona.py`` fails when the
committed schema is out of date with the model: run this and commit the result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from persona.brand import Brand

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "brands" / "brand.schema.json"


def brand_schema() -> dict[str, Any]:
    schema = Brand.model_json_schema()
    # A don't-rule may be written as a plain string (Rules._plain_strings turns it into {rule}).
    dont = schema["$defs"]["Rules"]["properties"]["dont"]
    dont["items"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/DontRule"}]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Brand file (brandchat)"
    return schema


def render() -> str:
    return json.dumps(brand_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
