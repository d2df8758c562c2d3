"""The package's modules import each other in one direction: no circles, and nothing that
only reads a trained run imports training or reporting."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

PACKAGE = Path(__file__).resolve().parents[1] / "gesture_cache"


def imported_modules(path: Path) -> set[str]:
    """The package's modules that `path` imports anywhere (in functions too), leaving out
    imports under `if TYPE_CHECKING:`, which never run."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "gesture_cache":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("gesture_cache."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gesture_cache."):
                    found.add(alias.name.split(".")[1])
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return (found & modules) - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: imported_modules(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_no_two_modules_import_each_other_in_a_circle():
    graph = import_graph()
    names = sorted(graph)
    index = {n: i for i, n in enumerate(names)}
    edges = [(index[a], index[b]) for a, targets in graph.items() for b in targets if b in index]
    rows, cols = zip(*edges)
    matrix = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    circles = [
        sorted(n for n in names if labels[index[n]] == label)
        for label in set(labels)
        if (labels == label).sum() > 1
    ]
    assert circles == [], f"import circles: {circles}"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        for target in graph.get(module, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_readers_of_a_trained_run_import_neither_training_nor_reporting():
    graph = import_graph()
    for reader in ("predict", "detect", "export_bundle", "bundle", "trained", "run", "runs"):
        assert not {"train", "report", "tune", "demo"} & reachable(graph, reader), reader
