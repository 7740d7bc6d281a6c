"""The served browser client is the checked-in build of its sources (static/src/ → static/build.py).

Brand sites embed ``static/chat-client.js`` with one ``<script>`` tag, so it is a generated,
checked-in file; these tests catch an edit to ``static/src/`` that was not rebuilt (``make client``)
and a source file the build would leave out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from testkit import T

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
BUILD = STATIC_DIR / "build.py"


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), *args], capture_output=True, text=True, timeout=30 * T, check=False
    )


def test_the_served_client_is_byte_for_byte_a_fresh_build_of_static_src(tmp_path: Path) -> None:
    fresh = tmp_path / "chat-client.js"
    result = run_build("--out", str(fresh))
    assert result.returncode == 0, result.stderr
    served = (STATIC_DIR / "chat-client.js").read_bytes()
    assert served == fresh.read_bytes(), "static/chat-client.js is stale: run `make client` and commit it"


def test_the_es_module_build_is_a_fresh_build_too(tmp_path: Path) -> None:
    result = run_build("--out", str(tmp_path / "chat-client.js"), "--esm", str(tmp_path / "chat-client.mjs"))
    assert result.returncode == 0, result.stderr
    served = (STATIC_DIR / "chat-client.mjs").read_bytes()
    assert served == (tmp_path / "chat-client.mjs").read_bytes(), "static/chat-client.mjs is stale: run `make client`"


def test_a_source_file_the_build_does_not_list_fails_the_build_instead_of_vanishing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(STATIC_DIR / "src", src)
    (src / "extra.js").write_text("const EXTRA = 1;\n", encoding="utf-8")
    out = tmp_path / "chat-client.js"
    result = run_build("--src", str(src), "--out", str(out))
    assert result.returncode == 1
    assert "extra.js" in result.stderr
    assert not out.exists()


def test_the_widget_loads_the_client_by_the_hash_of_the_served_bundle() -> None:
    sys.path.insert(0, str(STATIC_DIR))
    try:
        from build import client_version  # static/build.py is a script, not a package
    finally:
        sys.path.remove(str(STATIC_DIR))
    version = client_version((STATIC_DIR / "chat-client.js").read_bytes())
    widget = (STATIC_DIR / "widget.js").read_text(encoding="utf-8")
    assert f'  const CLIENT_VERSION = "{version}";' in widget, "static/widget.js is stale: run `make client`"
    assert 'new URL("chat-client.js?v=" + CLIENT_VERSION, scriptUrl)' in widget
