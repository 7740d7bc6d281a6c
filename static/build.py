"""Build ``static/chat-client.js`` from ``static/src/`` by plain concatenation (stdlib only).

The served client must stay one dependency-free classic script (the one-tag embed), so the
sources are fragments of one function body: ``header.js`` opens the UMD wrapper, ``footer.js``
returns the public object and closes it, and the modules between them share its scope, each
using only what the modules before it define. The bundle is checked in; rebuild it after editing
``static/src/``::

    make client                                   # = python3 static/build.py
    python3 static/build.py --out /tmp/client.js  # build elsewhere (tests/test_client_bundle.py)

``tests/test_client_bundle.py`` fails when the checked-in bundle is not the fresh build.

The same modules also make ``static/chat-client.mjs``, the ES module build of the npm package
(``static/package.json``): the sources inside one function whose result is exported by name, with
no global and no ``module.exports``. ``footer.js``'s object is the list of exports.

The build also stamps the bundle's content hash into ``static/widget.js`` (``CLIENT_VERSION``): the
widget loads ``chat-client.js?v=<hash>``, a URL the server lets browsers cache for a year
(``api/static_files.py``), and a new build is a new URL.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent
SRC_DIR = STATIC_DIR / "src"
BUNDLE = STATIC_DIR / "chat-client.js"
WIDGET = STATIC_DIR / "widget.js"
ESM = STATIC_DIR / "chat-client.mjs"
_VERSION_LINE = re.compile(r'^(  const CLIENT_VERSION = )"[0-9a-f]*";$', re.MULTILINE)

# In load order: a module may use at load time only what an earlier one defines.
MODULES = (
    "header.js",
    "codes.js",
    "core.js",
    "env.js",
    "transport-ws.js",
    "transport-sse.js",
    "client-session.js",
    "client-frames.js",
    "client.js",
    "footer.js",
)

BANNER = "// GENERATED from static/src/ by static/build.py, do not edit: rebuild with `make client`.\n"


ESM_OPEN = (
    "// The ES module build of chat-client.js: the same code, exported by name; sets no global.\n"
    "const BrandChat = (function () {\n"
    '  "use strict";\n'
)


class BuildError(Exception):
    """The sources do not match ``MODULES`` (a file left out would silently vanish from the bundle)."""


def bundle(src_dir: Path = SRC_DIR) -> bytes:
    """The bundle's bytes: the banner, then every module, each preceded by a line naming it."""
    present = {path.name for path in src_dir.glob("*.js")}
    missing = [name for name in MODULES if name not in present]
    unlisted = sorted(present.difference(MODULES))
    if missing or unlisted:
        raise BuildError(f"static/build.py MODULES and {src_dir} differ: missing {missing}, not listed {unlisted}")
    parts = [BANNER]
    for name in MODULES:
        text = (src_dir / name).read_bytes().decode("utf-8")
        if name != MODULES[0]:
            parts.append(f"\n// ---- static/src/{name} ----\n")
        parts.append(text if text.endswith("\n") else text + "\n")
    return "".join(parts).encode("utf-8")


def export_names(src_dir: Path = SRC_DIR) -> list[str]:
    """The names of footer.js's returned object: the public API."""
    footer = (src_dir / "footer.js").read_text(encoding="utf-8")
    body = footer.split("return {", 1)[1].split("};", 1)[0]
    return re.findall(r"^\s+(\w+)\s*[,:]", body, re.MULTILINE)


def esm_bundle(src_dir: Path = SRC_DIR) -> bytes:
    """The ES module build: every module but the UMD header inside one function, then the exports."""
    umd = bundle(src_dir).decode("utf-8")
    body = umd.split(f"// ---- static/src/{MODULES[1]} ----\n", 1)[1]
    names = export_names(src_dir)
    exports = "export default BrandChat;\nexport const {\n" + "".join(f"  {n},\n" for n in names) + "} = BrandChat;\n"
    if not body.endswith("});\n"):
        raise BuildError("static/src/footer.js must end by closing the UMD factory: `});`")
    body = body.removesuffix("});\n")
    text = f"{BANNER}{ESM_OPEN}// ---- static/src/{MODULES[1]} ----\n{body}}})();\n\n{exports}"
    return text.encode("utf-8")


def client_version(data: bytes) -> str:
    """The bundle's content hash, as the widget puts it in the client's URL."""
    return hashlib.sha256(data).hexdigest()[:16]


def stamp_widget(widget: str, data: bytes) -> str:
    """``widget`` with ``CLIENT_VERSION`` set to the hash of the bundle ``data``."""
    stamped, count = _VERSION_LINE.subn(rf'\g<1>"{client_version(data)}";', widget)
    if count != 1:
        raise BuildError('static/widget.js has no `  const CLIENT_VERSION = "…";` line')
    return stamped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=SRC_DIR, help="the sources (default: static/src)")
    parser.add_argument("--out", type=Path, default=BUNDLE, help="where to write (default: static/chat-client.js)")
    parser.add_argument(
        "--widget",
        type=Path,
        help="the widget to stamp (default: static/widget.js when --out is)",
    )
    parser.add_argument(
        "--esm", type=Path, help="where to write the ES module build (default: static/chat-client.mjs when --out is)"
    )
    args = parser.parse_args(argv)
    widget_path: Path | None = args.widget or (WIDGET if args.out == BUNDLE else None)
    esm_path: Path | None = args.esm or (ESM if args.out == BUNDLE else None)
    try:
        data = bundle(args.src)
        esm = esm_bundle(args.src)
        widget = stamp_widget(widget_path.read_text(encoding="utf-8"), data) if widget_path else None
    except BuildError as err:
        print(f"build.py: {err}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    if esm_path is not None:
        esm_path.write_bytes(esm)
    if widget_path is not None and widget is not None:
        widget_path.write_text(widget, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
