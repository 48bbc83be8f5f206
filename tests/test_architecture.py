"""The package import rules of ../shared/ARCHITECTURE.md, checked on the source itself.

- edge never imports TensorFlow, Keras, trainer or converters (a Pi has none of them);
- trainer and converters use edge through its public subpackages only, never its modules;
- inside edge the layers point one way: contracts <- vision <- model <- pipeline <- service
  <- cli (stats and the two shared basics may be used by every layer, and use none);
- no import cycles between edge's modules;
- importing edge, or the contracts a dashboard codes against, loads no OpenCV and no LiteRT;
- the tests mirror edge's subpackages.
"""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge"

# What trainer and converters may import from edge: the public subpackages and the basics.
PUBLIC = {
    "edge",
    "edge.contracts",
    "edge.vision",
    "edge.model",
    "edge.stats",
    "edge.cli",
    "edge.errors",
    "edge.optional_dependencies",
}
# Which edge layers each layer may import (besides itself).
BASICS = {"errors", "optional_dependencies"}
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "optional_dependencies": {"errors"},
    "stats": BASICS,
    "contracts": BASICS,
    "vision": BASICS | {"contracts"},
    "model": BASICS | {"contracts", "vision", "stats"},
    "pipeline": BASICS | {"contracts", "vision", "model", "stats"},
    "service": BASICS | {"contracts", "vision", "model", "stats", "pipeline", "demo"},
    "cli": BASICS | {"contracts", "vision", "model", "stats", "pipeline", "service", "demo"},
    "demo": set(),
}
NO_TENSORFLOW = {"tensorflow", "keras", "tf_keras", "tensorboard", "trainer", "converters"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. edge.service.daemon
    target: str  # the imported module, e.g. edge.model.bundle
    line: int
    top_level: bool  # at module level (not inside a function)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(package: str) -> Iterator[Import]:
    for path in sorted((ROOT / package).rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        top = {id(n) for n in tree.body}
        top |= {id(c) for n in tree.body if isinstance(n, ast.Try | ast.If) for c in n.body}
        for node in ast.walk(tree):
            if node.lineno in skip if hasattr(node, "lineno") else False:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, node.lineno, id(node) in top)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield Import(module, node.module, node.lineno, id(node) in top)
                # `from edge.model import bundle`: a submodule, not a name.
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    if _is_module(candidate):
                        yield Import(module, candidate, node.lineno, id(node) in top)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edge"


def test_edge_never_imports_tensorflow_trainer_or_converters() -> None:
    bad = [i for i in imports_of("edge") if i.target.split(".")[0] in NO_TENSORFLOW]
    assert not bad, "\n".join(f"{i.module}:{i.line} imports {i.target}" for i in bad)


@pytest.mark.parametrize("package", ["trainer", "converters"])
def test_other_packages_use_edge_through_its_public_subpackages(package: str) -> None:
    bad = [
        i
        for i in imports_of(package)
        if i.target.split(".")[0] == "edge" and i.target not in PUBLIC
    ]
    assert not bad, "\n".join(
        f"{i.module}:{i.line} imports {i.target}: use one of {sorted(PUBLIC)}" for i in bad
    )


def test_edge_layers_point_one_way() -> None:
    layers = {p.name for p in EDGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    layers |= {p.stem for p in EDGE.glob("*.py") if p.stem != "__init__"}
    assert layers <= set(LAYERS), f"a new part of edge needs a rule here: {layers - set(LAYERS)}"
    bad = []
    for i in imports_of("edge"):
        if not i.target.startswith("edge.") or i.module == "edge":
            continue
        source, target = _layer(i.module), _layer(i.target)
        if source != target and target not in LAYERS[source]:
            bad.append(f"{i.module}:{i.line} ({source}) imports {i.target} ({target})")
    assert not bad, "\n".join(bad)


def test_edge_has_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for i in imports_of("edge"):
        if i.top_level and i.target.startswith("edge.") and _is_module(i.target):
            graph.setdefault(i.module, set()).add(i.target)
    # A package's __init__ importing its own modules is how it exposes them, not a cycle.
    cycles = [c for c in _cycles(graph) if not _only_package_exports(c)]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _only_package_exports(cycle: list[str]) -> bool:
    pairs = itertools.pairwise(cycle)
    return any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in pairs)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), as example paths."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append([*sorted(component), sorted(component)[0]])

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


_PROBE = """
import importlib, json, sys, time
t0 = time.perf_counter()
importlib.import_module(sys.argv[1])
ms = (time.perf_counter() - t0) * 1e3
heavy = sorted(m for m in ("cv2", "ai_edge_litert", "tflite_runtime", "tensorflow", "keras")
               if m in sys.modules)
print(json.dumps({"ms": ms, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    "module", ["edge", "edge.contracts", "edge.contracts.messages", "edge.contracts.results"]
)
def test_cheap_imports_load_no_opencv_or_litert(module: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, module], capture_output=True, text=True, cwd=ROOT
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    print(f"\nimport {module}: {found['ms']:.0f} ms, heavy modules: {found['heavy']}")
    assert found["heavy"] == [], f"import {module} loads {found['heavy']}"


def test_tests_mirror_edges_subpackages() -> None:
    packages = {p.name for p in EDGE.iterdir() if (p / "__init__.py").exists() and p.name != "demo"}
    mirrored = {p.name for p in (ROOT / "tests" / "edge").iterdir() if p.is_dir()}
    assert packages <= mirrored, f"tests/edge/ lacks {sorted(packages - mirrored)}"
