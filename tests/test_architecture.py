"""The layering of docs/architecture.md, checked on the code.

Every import inside ``src/monoscope`` (module level or inside a function) must go to the
same layer or a lower one, the import graph must have no cycles, and every rule of the
workflow must appear on the architecture page.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "monoscope"

# The table of docs/architecture.md: top-level module or package -> layer.
LAYERS = {
    "__init__": 1,
    "io": 1,
    "logs": 1,
    "config": 1,
    "device": 1,
    "compat": 1,
    "registry": 1,
    "checkpoints": 1,
    "jobserver": 1,
    "data": 2,
    "photos": 2,
    "weights": 2,
    "models": 2,
    "activations": 3,
    "references": 3,
    "crops": 3,
    "embedders": 3,
    "hierarchy": 3,
    "tables": 3,
    "plotting": 3,
    "semantics": 3,
    "vocabulary": 3,
    "pure": 4,
    "sae": 4,
    "contrastive": 4,
    "equivariant": 4,
    "units": 5,
    "evaluation": 5,
    "catalogue": 5,
    "preflight": 5,
    "readme": 5,
    "atlas": 6,
    "search": 6,
    "cli": 6,
    "__main__": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The monoscope modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("monoscope"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("monoscope"):
                found.add(node.module)
                # ``from monoscope import checkpoints`` imports a module, not a name.
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    if _exists(candidate):
                        found.add(candidate)
    return found


def _exists(module: str) -> bool:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    missing = sorted({_top(name) for name in MODULES} - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS here and to docs/architecture.md"


def test_imports_never_run_up_the_layers():
    upward = []
    for name, path in MODULES.items():
        for target in _imports(path):
            if LAYERS[_top(target)] > LAYERS[_top(name)]:
                upward.append(f"{name} (layer {LAYERS[_top(name)]}) imports {target}")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    # The package's ``__init__`` modules re-export their children; an edge from a child to
    # its own package's face is not a dependency on a sibling, so it is left out.
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target in _imports(path):
            if target in graph and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                cycle.extend(stack[stack.index(child) :] + [child])
                return True
            if child not in state and visit(child, stack + [child]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if start not in state and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.workflow
def test_every_rule_is_on_the_architecture_page():
    snakemake = Path(sys.executable).with_name("snakemake")
    listed = subprocess.run(
        [str(snakemake), "--list-rules"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    page = (REPO / "docs" / "architecture.md").read_text()
    missing = [rule for rule in listed if rule != "all" and not re.search(rf"\b{rule}\b", page)]
    assert not missing, f"rules missing from docs/architecture.md: {missing}"
