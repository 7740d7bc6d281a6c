"""Loading brand files: YAML → a validated :class:`~persona.brand.Brand`, all or nothing.

A bad file raises :class:`BrandFileError` naming the file, the field and its line, and the server
does not start. Besides the schema, a brand's own canned words (greeting, fallbacks, examples,
knowledge) must pass its own guard (:func:`persona.checks.self_check`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from persona.brand import Brand
from persona.checks import self_check


class BrandFileError(ValueError):
    """A brand file (or the brands directory) is unusable. ``problems`` are ``(field, line, message)``."""

    def __init__(self, path: Path, problem: str, problems: list[tuple[str, int | None, str]] | None = None) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problems = problems or []

    def __repr__(self) -> str:
        return f"BrandFileError({str(self.path)!r}, problems={self.problems!r})"


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    child = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _format(path: Path, problems: list[tuple[str, int | None, str]]) -> str:
    parts = [f"{field} (line {line}): {msg}" if line else f"{field}: {msg}" for field, line, msg in problems]
    return "invalid brand file: " + "; ".join(parts)


# libyaml's parser when PyYAML was built with it (the wheels are): ~10 times faster than the pure-Python one,
# and every server start (every test's) parses the brand files.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for the line of a bad field) and its value, from one parse."""
    loader = _SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def parse_brand(text: str, path: Path, environ: Mapping[str, str] | None = None, *, dev_keys: bool = False) -> Brand:
    """Validate brand YAML; raises :class:`BrandFileError` with every problem, its field and line.
    ``dev_keys``: honour the file's published ``api.dev_key`` (dev mode only; never in production)."""
    try:
        root, raw = _parse_yaml(text)
    except yaml.YAMLError as exc:
        raise BrandFileError(path, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise BrandFileError(path, "the file must hold a mapping of fields")
    try:
        brand = Brand.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            field = ".".join(str(p) for p in loc) or "(root)"
            problems.append((field, _line_of(root, loc), err["msg"]))
        raise BrandFileError(path, _format(path, problems), problems) from None
    if brand.id != path.stem:
        problems = [("id", _line_of(root, ("id",)), f"{brand.id!r} does not match the file name {path.stem!r}")]
        raise BrandFileError(path, _format(path, problems), problems)
    # The brand's own canned words must pass its own guard, or every fallback would be a violation.
    problems = [(field, _line_of(root, tuple(field_loc)), msg) for field, field_loc, msg in self_check(brand)]
    if problems:
        raise BrandFileError(path, _format(path, problems), problems)
    brand.resolve_api_key(environ, dev_keys=dev_keys)
    return brand


def load_brand(path: Path, environ: Mapping[str, str] | None = None, *, dev_keys: bool = False) -> Brand:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrandFileError(path, f"cannot read the file: {exc}") from None
    return parse_brand(text, path, environ, dev_keys=dev_keys)


def load_brands(
    directory: Path, environ: Mapping[str, str] | None = None, *, dev_keys: bool = False
) -> dict[str, Brand]:
    """Every ``*.yaml`` brand in ``directory``; raises :class:`BrandFileError` on the first bad one."""
    if not directory.is_dir():
        raise BrandFileError(directory, "BRANDS_DIR is not a directory")
    brands: dict[str, Brand] = {}
    for path in sorted(directory.glob("*.yaml")):
        brand = load_brand(path, environ, dev_keys=dev_keys)
        brands[brand.id] = brand
    if not brands:
        raise BrandFileError(directory, "no brand files (*.yaml) found")
    return brands
