"""The architecture as rules on the import graph, read from the source (imports inside
functions count too: they hide a dependency, they do not remove it).

    facerec/        bottom: configuration, records, errors, formats; imports no other layer
    udfs/           the face pipeline; imports facerec/ (Flink only in flink_functions.py)
    index_builder/  enrollment store, snapshots, publishing; imports facerec/ and udfs/
    api/, jobs/     on top; api/ never imports jobs/
    jobs/cli/       the command line, assembled in jobs/cli/main.py; nothing imports it back
    testkit/        test and benchmark helpers; no product module imports it
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("facerec", "udfs", "index_builder", "api", "jobs")
ALLOWED = {
    "facerec": {"facerec"},
    "udfs": {"facerec", "udfs"},
    "index_builder": {"facerec", "udfs", "index_builder"},
    "api": {"facerec", "udfs", "index_builder", "api"},
    "jobs": {"facerec", "udfs", "index_builder", "api", "jobs"},
}
FLINK_IMPORTERS = ("udfs.flink_functions", "jobs.")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            # ``from jobs.cli import demo`` imports the module jobs.cli.demo
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def product_graph() -> dict[str, set[str]]:
    graph = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            graph[module_name(path)] = imports_of(path, module_name(path))
    return graph


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return product_graph()


def test_given_the_tree_when_reading_imports_then_every_product_module_is_seen(graph):
    assert {"facerec.config", "udfs.engine", "index_builder.enrollment", "api.app"} <= set(graph)
    assert "jobs.cli.main" in graph and "jobs.cli.demo" in graph["jobs.cli.main"]


def layer_violations(graph: dict[str, set[str]], layer: str) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] in PRODUCT + ("testkit", "tests", "bench")
        and target.split(".")[0] not in ALLOWED[layer]
    )


@pytest.mark.parametrize("layer", PRODUCT)
def test_given_a_layer_when_it_imports_the_project_then_only_from_layers_below(graph, layer):
    wrong = layer_violations(graph, layer)
    assert not wrong, "\n".join(wrong)


def test_given_the_command_line_when_imported_then_only_from_itself_and_main_by_nobody(graph):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (target.startswith("jobs.cli") and not module.startswith("jobs.cli"))
        or (target == "jobs.cli.main" and module != "jobs.cli.main")
    )
    assert not wrong, "\n".join(wrong)


def test_given_flink_when_imported_then_only_by_jobs_and_the_udfs_wrapper_module(graph):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] == "pyflink"
        and not any(module.startswith(p) for p in FLINK_IMPORTERS)
    )
    assert not wrong, "\n".join(wrong)


def test_given_the_rules_when_a_module_breaks_one_then_the_check_names_it(tmp_path):
    """The reader sees function-level and relative imports (a rule that cannot fail is no
    rule)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from udfs.engine import FaceEngine\n    from . import config\n")
    found = imports_of(probe, "facerec.probe")
    assert {"udfs.engine", "facerec.config"} <= found
    assert "facerec.probe imports udfs.engine" in layer_violations(
        {"facerec.probe": found}, "facerec"
    )
