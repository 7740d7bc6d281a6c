"""Build ``static/chat-client.js`` from ``static/src/`` by plain concatenation (stdlib only).

The served client must stay one dependency-free classic script (the one-tag embed), so the
sources are fragments of one function body: ``header.js`` opens the UMD wrapper, ``footer.js``
returns the public object and closes it, and the modules between them share its scope, each
using only what the modules before it define. The bundle is checked in; rebuild it after editing
``static/src/``::

    make client                                   # = python3 static/build.py
    python3 static/build.py --out /tmp/client.js  # build elsewhere (tests/test_client_bundle.py)

``tests/test_client_bundle.py`` fails when the checked-in bundle is not the fresh build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent
SRC_DIR = STATIC_DIR / "src"
BUNDLE = STATIC_DIR / "chat-client.js"

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=SRC_DIR, help="the sources (default: static/src)")
    parser.add_argument("--out", type=Path, default=BUNDLE, help="where to write (default: static/chat-client.js)")
    args = parser.parse_args(argv)
    try:
        data = bundle(args.src)
    except BuildError as err:
        print(f"build.py: {err}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
