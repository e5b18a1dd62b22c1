"""The package's shape: no import circles, rooms that point one way, docstrings that say so.

The graph is read from the source (every ``import``, lazy ones inside
functions included), so a circle that only closes when a command runs is
caught too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import ppml_image

ROOT = Path(ppml_image.__file__).parent
PACKAGE = "ppml_image"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if "_data" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imported(path: Path) -> Iterator[str]:
    """Every module of this package that *path* imports, anywhere in the file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                # `from pkg import mod` imports the module; `from mod import name` the module.
                yield submodule if submodule in MODULES else node.module


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imported(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def _room(module: str) -> str:
    """A folder without sub-folders is one room; elsewhere each module is its own."""
    package = module.rsplit(".", 1)[0]
    path = MODULES[module]
    if path.name == "__init__.py":
        package = module
    folder = MODULES.get(package)
    if folder is None or package == PACKAGE:
        return module
    leaf = not any(p.is_dir() and (p / "__init__.py").exists() for p in folder.parent.iterdir())
    return package if leaf else module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports() -> None:
    graph = _graph()
    # cli/__init__ imports its command modules inside a function.
    assert "ppml_image.cli.sgx" in graph["ppml_image.cli"]
    assert "ppml_image.sgx.signing.hsm" in graph["ppml_image.sgx.signing.choose"]


def test_no_module_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def test_rooms_point_one_way() -> None:
    rooms: dict[str, set[str]] = {}
    for module, imported in _graph().items():
        rooms.setdefault(_room(module), set()).update(
            _room(m) for m in imported if _room(m) != _room(module))
    assert _room("ppml_image.sgx.manifest.policy") == "ppml_image.sgx.manifest"
    assert _room("ppml_image.sgx.sign") == "ppml_image.sgx.sign"
    assert _cycles(rooms) == []


@pytest.mark.parametrize("low,high", [
    ("ppml_image.sgx", "ppml_image.images"),
    ("ppml_image.sgx", "ppml_image.cli"),
    ("ppml_image.sgx.signing", "ppml_image.sgx.manifest"),
    ("ppml_image.sgx.measure", "ppml_image.sgx.manifest"),
    ("ppml_image.sgx.measure", "ppml_image.sgx.signing"),
    ("ppml_image.images.base", "ppml_image.images.enclave"),
    ("ppml_image.images.engine", "ppml_image.images.base"),
    ("ppml_image.images.engine", "ppml_image.images.enclave"),
    ("ppml_image.sgx", "ppml_image.attest"),
    ("ppml_image.images", "ppml_image.attest"),
    ("ppml_image.attest", "ppml_image.images"),
    ("ppml_image.attest", "ppml_image.cli"),
])
def test_a_lower_room_never_imports_a_higher_one(low: str, high: str) -> None:
    for module, imported in _graph().items():
        if module == low or module.startswith(low + "."):
            bad = sorted(m for m in imported if m == high or m.startswith(high + "."))
            assert not bad, (module, bad)


def test_signing_layers() -> None:
    """sigstruct is data and EINIT's checks; signers above it; tokens and external above that."""
    graph = _graph()
    signing = "ppml_image.sgx.signing."
    assert not {m for m in graph[signing + "sigstruct"] if m.startswith(signing)} - {
        signing + "keys"}
    assert signing + "choose" not in set().union(
        *(graph[m] for m in graph if m.startswith(signing) and m != signing + "choose"))
    # The measurement record is read by images and attest alike: it stays near the bottom.
    assert {m for m in graph[signing + "record"] if m.startswith("ppml_image.sgx")} == {
        signing + "identity"}
    for upper in ("hsm", "external"):
        assert signing + "signers" in graph[signing + upper]
        assert signing + upper not in graph[signing + "signers"]


def test_every_room_says_what_it_is_for_and_what_it_may_import() -> None:
    for name, path in MODULES.items():
        if path.name != "__init__.py" or name == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "may import" in doc.lower(), name
