"""The browser client as an npm package (static/package.json): ``npm pack`` makes a tarball that a
scratch project installs and uses from Node — ES module and CommonJS — against a real server; its
hand-written types (static/chat-client.d.ts) declare exactly what the builds export. (``make
typecheck-client`` runs ``tsc --noEmit`` over tests/ts/, a consumer's code, against them.)"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from persona.demo import compose_answer
from testkit import T
from testkit.server import RunningServer

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are needed"),
]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PACKAGE = json.loads((STATIC_DIR / "package.json").read_text(encoding="utf-8"))


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60 * T, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}\n{done.stdout}"
    return done.stdout


def node_keys(script: str, cwd: Path) -> list[str]:
    keys: list[str] = json.loads(run(["node", "--input-type=module", "-e", script], cwd))
    return sorted(keys)


def declared_exports() -> list[str]:
    """The value exports of the .d.ts (types and interfaces are not runtime exports)."""
    text = (STATIC_DIR / "chat-client.d.ts").read_text(encoding="utf-8")
    return sorted(re.findall(r"^export declare (?:const|function|class) (\w+)", text, re.MULTILINE))


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    name = run(["npm", "pack", "--pack-destination", str(out), "--silent"], STATIC_DIR).strip().splitlines()[-1]
    return out / name


@pytest.fixture(scope="module")
def project(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch Node project with the packed tarball installed (offline: the package has no dependencies)."""
    directory = tmp_path_factory.mktemp("consumer")
    (directory / "package.json").write_text(json.dumps({"name": "consumer", "private": True}), encoding="utf-8")
    run(["npm", "install", "--offline", "--no-audit", "--no-fund", "--silent", str(tarball)], directory)
    return directory


def test_the_tarball_holds_the_builds_the_types_and_the_widget_only(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = sorted(m.name.removeprefix("package/") for m in tar.getmembers())
    assert names == sorted([*PACKAGE["files"], "package.json"])
    assert tarball.name == f"brandchat-client-{PACKAGE['version']}.tgz"


def test_the_types_declare_exactly_what_both_builds_export() -> None:
    esm = node_keys(
        'const m = await import("./chat-client.mjs"); console.log(JSON.stringify(Object.keys(m)))', STATIC_DIR
    )
    umd = node_keys(
        'import { createRequire } from "node:module"; const require = createRequire(process.cwd() + "/");'
        ' console.log(JSON.stringify(Object.keys(require("./chat-client.js"))))',
        STATIC_DIR,
    )
    assert esm == sorted([*umd, "default"])
    assert declared_exports() == umd


def test_the_installed_package_works_as_an_es_module_and_from_require(project: Path) -> None:
    script = (
        'import BrandChat, { ChatClient, Backoff, version } from "@brandchat/client";'
        'import { createRequire } from "node:module";'
        'const cjs = createRequire(import.meta.url)("@brandchat/client");'
        "console.log(JSON.stringify({"
        "  esm: typeof ChatClient, same: BrandChat.ChatClient === ChatClient, version,"
        "  cjs: typeof cjs.ChatClient, delay: new Backoff({ random: () => 0.5, baseMs: 100 }).next(),"
        "  global: typeof globalThis.BrandChat,"
        "}));"
    )
    result = json.loads(run(["node", "--input-type=module", "-e", script], project))
    assert result == {
        "esm": "function",
        "same": True,
        "version": "1",
        "cjs": "function",
        "delay": 50,
        "global": "undefined",
    }


async def test_a_node_app_talks_to_a_real_server_through_the_installed_package(
    project: Path, server: RunningServer
) -> None:
    question = "How long does shipping take?"
    script = f"""
import {{ ChatClient }} from "@brandchat/client";
const chat = new ChatClient({{ server: {json.dumps(server.base_url)}, brand: "demo", transports: ["websocket"] }});
const done = new Promise((resolve) => chat.on("done", resolve));
await chat.connect();
chat.send({json.dumps(question)});
const reply = await done;
const transport = chat.transportName;
chat.close();
console.log(JSON.stringify({{ text: reply.text, finish: reply.finish_reason, transport }}));
"""
    probe = await asyncio.create_subprocess_exec("node", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)")
    flags = [] if await probe.wait() == 0 else ["--experimental-websocket"]  # Node 20 needs the flag
    (project / "talk.mjs").write_text(script, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        "node", *flags, "talk.mjs", cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(30 * T):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    expected = compose_answer(server.runtime.brands["demo"], question)
    assert result == {"text": expected, "finish": "stop", "transport": "websocket"}
