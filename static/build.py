"""Build ``static/chat-client.js`` from ``static/src/`` by plain concatenation (stdlib only).

The served client must stay one dependency-free classic script (the one-tag embed), so the
sources are fragments of one function body: ``header.js`` opens the UMD wrapper, ``footer.js``
returns the public object and closes it, and the modules between them share its scope, each
using only what the modules before it define. The bundle is checked in; rebuild it after editing
``static/src/``::

    make client                                   # = python3 static/build.py
    python3 static/build.py --out /tmp/client.js  # build elsewhere (tests/test_client_bundle.py)

``tests/test_client_bundle.py`` fails when the checked-in bundle is not the fresh build.

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
    args = parser.parse_args(argv)
    widget_path: Path | None = args.widget or (WIDGET if args.out == BUNDLE else None)
    try:
        data = bundle(args.src)
        widget = stamp_widget(widget_path.read_text(encoding="utf-8"), data) if widget_path else None
    except BuildError as err:
        print(f"build.py: {err}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    if widget_path is not None and widget is not None:
        widget_path.write_text(widget, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
