"""The layout's rules, read from the source with ``ast``: rooms import only rooms below them,
no module-level import circle, small modules, a short top level.

An import is resolved to the module it loads: ``from tuner_core import tracking`` to the
package ``tuner_core.tracking``, ``from tuner_core.storage import open_storage`` to the
module the package's ``lazy_exports`` names for it, ``LazyModule("train.synthesize")`` to
``train.synthesize``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tuner_core", "train", "bot")

# Each package's rooms, lowest first; a room may import only rooms before it (and itself).
ROOMS = {
    "tuner_core": [
        ("tuner_core.errors", "tuner_core.lazy", "tuner_core.logs"),
        ("tuner_core.rules",),
        ("tuner_core.config",),
        ("tuner_core.storage",),
        ("tuner_core.trial",),
        ("tuner_core.tracking",),
        ("tuner_core.study",),
        ("tuner_core.reporting",),
        ("tuner_core.check",),
        ("tuner_core.api",),
        ("tuner_core.__main__", "tuner_core"),
    ],
    "train": [
        ("train.tacotron2",),
        ("train.arguments", "train.corpus", "train.evaluate", "train.launcher", "train.render",
         "train.replay", "train.synthesize", "train.__main__", "train"),
    ],
}
# Between packages: bot uses tuner_core, which uses train; never the other way.
PACKAGE_ORDER = ("train", "tuner_core", "bot")
MAX_LINES = 450
MAX_TOP_LEVEL_MODULES = 8


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    eager: set[str] = field(default_factory=set)  # loaded when this module is imported
    lazy: set[str] = field(default_factory=set)  # loaded later (LazyModule, lazy_exports,
    # function-local or TYPE_CHECKING imports): dependencies all the same


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_modules() -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            modules[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return modules


def lazy_exports(module: Module) -> dict[str, str]:
    """A package's ``lazy_exports(__name__, {...})`` as {name: absolute module}."""
    for node in ast.walk(module.tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports"
                and isinstance(node.args[1], ast.Dict)):
            return {key.value: resolve_relative(value.value, module.name)
                    for key, value in zip(node.args[1].keys, node.args[1].values, strict=True)}
    return {}


def resolve_relative(target: str, package: str) -> str:
    if not target.startswith("."):
        return target
    return package + target if target != "." else package


def targets(node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> set[str]:
    """The project's modules an import statement loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if node.level or node.module is None or node.module not in modules:
        assert not node.level, "relative imports are not used here"
        return set()
    found = set()
    exports = lazy_exports(modules[node.module])
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if submodule in modules:
            found.add(submodule)
        else:
            found.add(exports.get(alias.name, node.module))
    return found


def under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    modules = load_modules()
    for module in modules.values():
        parents = {child: parent for parent in ast.walk(module.tree)
                   for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                top_level = parents.get(node) is module.tree
                eager = top_level and not under_type_checking(node, parents)
                (module.eager if eager else module.lazy).update(targets(node, modules))
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LazyModule"
                  and node.args[0].value in modules):
                module.lazy.add(node.args[0].value)
        module.lazy |= set(lazy_exports(module).values()) & set(modules)
        module.eager.discard(module.name)
    return modules


def room(name: str) -> tuple[str, int]:
    """The room that module ``name`` is in, and its rank in its package (0: the lowest).

    A prefix names a module and everything below it; the package's own name, its
    ``__init__`` alone. A package without rooms (bot) is one room.
    """
    package = name.split(".")[0]
    if package not in ROOMS:
        return package, 0
    for rank, rooms in enumerate(ROOMS[package]):
        for prefix in rooms:
            if name == prefix or (prefix != package and name.startswith(prefix + ".")):
                return rooms[0], rank
    raise AssertionError(f"{name} is in no room of ROOMS: add it to one")


def test_every_module_is_in_a_room(modules):
    for name in modules:
        room(name)


def test_rooms_import_only_rooms_below_them(modules):
    upward = []
    for module in modules.values():
        package = module.name.split(".")[0]
        where, rank = room(module.name)
        for target in module.eager | module.lazy:
            other = target.split(".")[0]
            if other != package:
                if PACKAGE_ORDER.index(other) > PACKAGE_ORDER.index(package):
                    upward.append(f"{module.name} -> {target} (package {other} is above)")
                continue
            their_room, their_rank = room(target)
            if their_rank > rank or (their_rank == rank and their_room != where):
                upward.append(f"{module.name} -> {target} ({their_room} is above {where})")
    assert not upward, "imports up the layers:\n" + "\n".join(sorted(upward))


def test_no_module_level_import_circle(modules):
    """A circle of module-level imports works only in some import orders, by luck."""
    circles = []
    state: dict[str, str] = {}  # "visiting" or "done"

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for target in sorted(modules[name].eager):
            if state.get(target) == "visiting":
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checks_see_a_circle_and_an_upward_import(modules):
    """The two checks above, on a constructed pair of modules, so they cannot pass vacuously."""
    storage = modules["tuner_core.storage.opening"]
    study = modules["tuner_core.study.life"]
    assert "tuner_core.storage.opening" in study.eager  # study.life needs the storage
    assert room(storage.name)[1] < room(study.name)[1]
    assert room("tuner_core.trial.runner")[1] < room("tuner_core.tracking.runs")[1]
    # Resolving names through lazy exports: the package's name leads to its module.
    assert lazy_exports(modules["tuner_core.storage"])["open_storage"] == storage.name


def test_no_lazy_export_is_named_as_a_submodule(modules):
    """Once the submodule is imported, Python binds its name in the package over the export."""
    clashes = [f"{module.name}.{name}" for module in modules.values()
               for name in lazy_exports(module) if f"{module.name}.{name}" in modules]
    assert not clashes


def test_modules_are_small(modules):
    long = {name: lines for name, module in modules.items()
            if (lines := len(module.path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_tuner_core_keeps_a_short_top_level():
    top = sorted(path.name for path in (ROOT / "tuner_core").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
