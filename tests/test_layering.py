"""The package's layers (docs/design.md): each module imports only modules of its own layer or
below, no module is in an import cycle, and the lower layers load without the trainer or the
evaluation.

Imports are read from the source with `ast`, those inside functions included: an import moved into
a function to dodge a cycle is still an edge of the graph here.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

from conftest import run_command

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cmma_jax"

# Layer of each module (by its dotted name's prefix; the longest prefix wins). A module may import
# modules of its own layer or of lower ones.
LAYERS = {
    "cmma_jax": 0,  # the package's __init__ (the version)
    "cmma_jax.losses": 0,
    "cmma_jax.metrics": 0,
    "cmma_jax.fast_conv": 0,
    "cmma_jax.fft_conv": 0,
    "cmma_jax.pooling": 0,
    "cmma_jax.parallel": 0,
    "cmma_jax.images": 0,
    "cmma_jax.progress": 0,
    "cmma_jax.presets": 0,
    "cmma_jax.files": 0,
    "cmma_jax.stats": 0,
    "cmma_jax.flag_types": 0,
    "cmma_jax.data": 1,
    "cmma_jax.configs": 1,
    "cmma_jax.configs.checks": 3,  # the choices of its fields come from nets, models and data
    "cmma_jax.nets": 2,
    "cmma_jax.models": 3,
    "cmma_jax.checkpoints": 4,
    "cmma_jax.workdirs": 4,
    "cmma_jax.convergence": 4,
    "cmma_jax.train": 5,
    "cmma_jax.steps": 5,  # the trainer's compiled step (train.make_step)
    "cmma_jax.hooks": 5,
    "cmma_jax.classifier": 5,
    "cmma_jax.evaluate": 6,
    "cmma_jax.figures": 6,
    "cmma_jax.verdicts": 6,
    "cmma_jax.curves": 6,
    "cmma_jax.reproduce": 7,
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                       for a in node.names]
        else:
            continue
        for target in targets:
            # The innermost module of ours that the dotted name names.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int:
    # "cmma_jax" is the package's __init__ alone, not a prefix of every module.
    prefixes = [p for p in LAYERS if name == p or (p != "cmma_jax" and name.startswith(p + "."))]
    if not prefixes:
        raise AssertionError(f"{name} is on no layer: add it to LAYERS and to docs/design.md.")
    return LAYERS[max(prefixes, key=len)]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    source = "def f():\n    from cmma_jax import train\n"
    (tmp_path / "m.py").write_text(source)
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    modules = {"cmma_jax.m": tmp_path / "m.py", "cmma_jax.train": None, "cmma_jax": None}
    assert _imports("cmma_jax.m", tmp_path / "m.py", modules) == {"cmma_jax.train"}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_outside_import_reader_sees_a_submodule_importing_out():
    graph = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": set(), "q": set()}
    assert _imports_from_outside(graph, "p") == set()
    graph["p.b"] = {"q"}
    assert _imports_from_outside(graph, "p") == {"q"}


def test_no_module_is_in_an_import_cycle():
    assert _cycles(_graph()) == []


def test_every_module_imports_only_its_layer_and_below():
    wrong = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
             for a, targets in _graph().items() for b in sorted(targets)
             if _layer(b) > _layer(a)]
    assert wrong == []


def _imports_from_outside(graph, package: str) -> set[str]:
    """What the modules of `package` (its __init__ and every submodule) import of ours outside it."""
    inside = {m for m in graph if m == package or m.startswith(package + ".")}
    return set().union(*(graph[m] for m in inside)) - inside


def test_the_objectives_import_nothing_of_ours():
    graph = _graph()
    # The objectives are a package (cmma_jax/losses/): its modules import each other and nothing
    # else of ours.
    assert _imports_from_outside(graph, "cmma_jax.losses") == set()
    assert graph["cmma_jax.metrics"] == set()


@pytest.mark.parametrize("module", ["cmma_jax.losses", "cmma_jax.metrics", "cmma_jax.nets",
                                    "cmma_jax.figures"])
def test_lower_layers_load_without_the_trainer_or_the_evaluation(module):
    code = (f"import sys, {module}\n"
            "loaded = sorted(m for m in sys.modules if m == 'cmma_jax.train' or "
            "m.startswith('cmma_jax.evaluate'))\n"
            "assert not loaded, loaded\n")
    result = run_command([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr[-2000:]
