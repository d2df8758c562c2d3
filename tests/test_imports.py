"""The package's layout: subpackages along the pipeline, each importing only those before it,
no circles between modules, nothing that only reads a trained run importing training or
the command line, and no module that has grown past what a reader can hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

PACKAGE = Path(__file__).resolve().parents[1] / "gesture_cache"

# Each subpackage may import those before it, never those after.
LAYERS = (
    "common",
    "video",
    "sources",
    "backbones",
    "cache",
    "extract",
    "data",
    "train",
    "deploy",
    "detect",
    "serve",
    "cli",
)
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """The package's modules that `path` imports anywhere: in functions too, and under
    `if TYPE_CHECKING:` (which never runs, but an arrow there still runs back up the layers)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")  # a module imported from a package
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != "gesture_cache"} - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) for name, path in MODULES.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_module_lives_in_a_layer():
    loose = [m for m in MODULES if layer(m) is None]
    assert sorted(loose) == ["gesture_cache", "gesture_cache.__main__"], loose


def test_no_two_modules_import_each_other_in_a_circle():
    graph = import_graph()
    names = sorted(graph)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[a], index[b]) for a, targets in graph.items() for b in targets]
    rows, cols = zip(*edges)
    matrix = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    circles = [
        sorted(n for n in names if labels[index[n]] == label)
        for label in set(labels)
        if (labels == label).sum() > 1
    ]
    assert circles == [], f"import circles: {circles}"


def test_a_subpackage_imports_only_those_before_it():
    order = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if layer(source) and layer(target) and order[layer(target)] > order[layer(source)]
    ]
    assert upward == [], upward


def test_readers_of_a_trained_run_import_neither_training_nor_the_command_line():
    graph = import_graph()
    training = {
        f"gesture_cache.train.{name}"
        for name in ("fit", "prepare", "callbacks", "metrics", "plots", "tune")
    }
    readers = [m for m in graph if layer(m) in ("deploy", "detect", "serve")]
    readers += ["gesture_cache.train.run_folder", "gesture_cache.train.runs"]
    for reader in readers:
        reached = reachable(graph, reader)
        assert not training & reached, (reader, training & reached)
        assert not {m for m in reached if layer(m) == "cli"}, reader


def test_only_the_backbones_name_a_backbone():
    """Extraction, predict, detect and export find a backbone through the registry (the
    `hands` command, which shows what that backbone sees, names it)."""
    graph = import_graph()
    networks = tuple(f"gesture_cache.backbones.{name}" for name in ("c3d", "i3d", "hands"))
    for module, targets in graph.items():
        if layer(module) != "backbones" and module != "gesture_cache.cli.commands":
            named = {t for t in targets if t.startswith(networks)}
            assert not named, (module, named)
    hands_command = {t for t in graph["gesture_cache.cli.commands"] if t.startswith(networks)}
    assert hands_command and all(t.startswith(networks[2]) for t in hands_command), hands_command


def test_no_module_is_longer_than_a_reader_holds():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, long


def test_the_numpy_parts_of_data_load_without_tensorflow():
    modules = ["samples", "splits", "statistics", "read_ahead", "windows"]
    code = "; ".join(f"import gesture_cache.data.{m}" for m in modules)
    code += "; import sys; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_package_runs_as_a_module():
    for module in ("gesture_cache", "gesture_cache.cli"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True
        )
        assert result.returncode == 0 and result.stdout.strip(), (module, result.stderr)
