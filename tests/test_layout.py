"""The package's layers: commands (cli, jobs) over the pipeline over the stages, and no import cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "defectkit"


def import_graph() -> dict[str, set[str]]:
    """module -> the defectkit modules it imports anywhere in its code (also inside functions)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("defectkit"):
                targets |= {resolve(node.module), *(resolve(f"{node.module}.{a.name}") for a in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names if a.name.startswith("defectkit")}
        # a module's own package (its __init__) is loaded before it anyway
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_stages_do_not_import_commands_or_the_pipeline():
    graph = import_graph()
    # the command line, the jobs and the Ray engine drive the pipeline; nothing under them may import them
    commands = {m for m in graph if m in ("defectkit.cli", "defectkit.__main__", "defectkit.distributed") or m.startswith("defectkit.jobs")}
    for module, targets in graph.items():
        if module in commands or module == "defectkit":
            continue
        forbidden = commands if module == "defectkit.pipeline" else commands | {"defectkit.pipeline"}
        assert not targets & forbidden, f"{module} imports {sorted(targets & forbidden)}"
