"""The package layers of docs/architecture.md, enforced: imports only point down, and no cycles.

    streaming            the stream core: rules, events, buffer contract + backends, fan-out, follow
    llm      persona     providers (know no brands) · the brand layer (prompts, guard, demo voice)
    reply                the reply pipeline: upstream call, deadlines, retry, guard, batching, ending
    api                  the edges: HTTP, WebSocket, SSE, OpenAI-compatible; the composition root
    eval  bench  deploy  tools on top (they may use anything below; nothing below uses them)
    testkit              real parts for tests and benchmarks (never imported by the application)

Every import counts, wherever it is written (inside a function, under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package → the project packages it may import (itself included).
ALLOWED: dict[str, set[str]] = {
    "streaming": {"streaming"},
    "llm": {"streaming", "llm"},
    "persona": {"streaming", "persona"},
    "reply": {"streaming", "llm", "persona", "reply"},
    "api": {"streaming", "llm", "persona", "reply", "api"},
    "eval": {"streaming", "llm", "persona", "reply", "api", "eval"},
    "bench": {"streaming", "llm", "persona", "reply", "api", "bench", "testkit"},
    "deploy": {"deploy"},
    "testkit": {"streaming", "llm", "persona", "reply", "api", "testkit"},
}
PROJECT = {*ALLOWED, "tests", "testkit"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PROJECT}


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in ALLOWED for p in sorted((ROOT / package).rglob("*.py"))}


def test_every_import_points_down_the_layers() -> None:
    violations = []
    for name, path in project_modules().items():
        layer = name.split(".")[0]
        for imported in imports_of(path):
            if imported.split(".")[0] not in ALLOWED[layer]:
                violations.append(f"{name} imports {imported}")
    assert violations == [], "\n".join(sorted(violations))


def test_the_layer_check_sees_a_lower_layer_importing_a_higher_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from reply.jobs import GenerationManager\n    from api import ws\n")
    assert imports_of(bad) >= {"reply.jobs", "api.ws"}
    assert not {"reply", "api"} <= ALLOWED["streaming"]


def test_there_are_no_import_cycles_between_project_modules() -> None:
    modules = project_modules()
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ is imported with any of its modules; it may not import them back.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "\n".join(" → ".join(c) for c in cycles)


LAYER_MODULES = {
    "streaming": ["streaming.buffer", "streaming.follow", "streaming.log", "streaming.codes", "streaming.tasks"],
    "llm": ["llm.openai_provider", "llm.offline"],
    "persona": ["persona.loader", "persona.guard", "persona.prompt", "persona.demo"],
    "reply": ["reply.jobs", "reply.ending"],
}


@pytest.mark.parametrize("layer", sorted(LAYER_MODULES))
def test_each_layer_imports_alone_without_loading_a_higher_layer(layer: str) -> None:
    code = (
        "import json, sys\n"
        f"for m in {LAYER_MODULES[layer]!r}: __import__(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout)) & set(ALLOWED)
    assert loaded <= ALLOWED[layer], f"{layer} loaded {sorted(loaded - ALLOWED[layer])}"


def test_the_image_copies_every_package_the_project_installs() -> None:
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    missing = [p for p in packages if f"COPY {p} ./{p}" not in dockerfile]
    assert missing == [], f"Dockerfile does not copy {missing}"
