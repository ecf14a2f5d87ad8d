"""Imports point one way. Each package of the library says in its ``__init__`` docstring which
packages it may import ("May import: ..."); every module keeps to its package's rule, the rules
themselves have no loop, no module imports another in a circle, and the bottom layers, imported in a
fresh interpreter, load neither the training loop nor the data stack."""
import ast
import functools
import graphlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dyninf.utils.paths import course_root

LIBRARY = course_root() / "lib" / "dyninf"
BOTTOM = "dyninf.decisions"   # the decision protocol: imports nothing of the library
TOP_LEVEL_MODULES_AT_MOST = 6

# the training loop, CIFAR-10, the course and the heavy packages only they need
ABOVE = ("dyninf.training", "dyninf.course", "dyninf.data.cifar", "dyninf.measure", "dyninf.tools",
         "pandas", "PIL", "tqdm", "matplotlib")
# what each module may load of the library: the layers below it
BELOW = {
    "dyninf.decisions": {"dyninf", "dyninf.decisions"},
    "dyninf.network.backbones": {"dyninf", "dyninf.decisions", "dyninf.network", "dyninf.network.backbones",
                                 "dyninf.network.skipping", "dyninf.network.folding"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The library's package a module belongs to: ``dyninf.network`` for ``dyninf.network.cost``; a
    module at the top (``dyninf.decisions``) is its own."""
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path) -> set[str]:
    """The library's modules ``path`` imports (``from dyninf.network import skipping`` imports
    ``dyninf.network.skipping``, if that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "dyninf"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dyninf":
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in library_modules() else node.module)
    return found


@functools.lru_cache(maxsize=None)
def library_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(LIBRARY.rglob("*.py"))}


@functools.lru_cache(maxsize=None)
def package_rules() -> dict[str, frozenset[str]]:
    """Each package's "May import:" line: the packages (besides itself) its modules may import."""
    packages = {package_of(module) for module in library_modules()}
    rules = {}
    for init in sorted(LIBRARY.glob("*/__init__.py")):
        package = module_name(init)
        docstring = (ast.get_docstring(ast.parse(init.read_text())) or "").replace("\n", " ")
        line = re.search(r"May import: (.*?)\.?$", docstring)
        assert line, f"{package}'s __init__ docstring has no 'May import:' line"
        stated = line.group(1)
        if stated.startswith("nothing"):
            rules[package] = frozenset()
        elif stated.startswith("every"):
            rules[package] = frozenset(packages - {package, "dyninf"})
        else:
            rules[package] = frozenset(re.findall(r"dyninf\.\w+", stated))
    return rules


def offending_imports(modules: dict[str, Path]) -> list[str]:
    """Each import of ``modules`` (name: file) that its package's rule does not allow."""
    offenders = []
    for module, path in modules.items():
        package = package_of(module)
        if module == BOTTOM or module == "dyninf":   # the bottom, and the package's own __init__: nothing
            allowed = {module}
        else:
            allowed = package_rules()[package] | {package}
        offenders += [f"{module} imports {imported} ({package} may import: {', '.join(sorted(allowed - {package}))})"
                      for imported in sorted(imported_modules(path)) if package_of(imported) not in allowed]
    return offenders


def test_every_folder_is_a_package_that_says_its_role_and_the_top_holds_at_most_six_modules():
    top = sorted(path.name for path in LIBRARY.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MODULES_AT_MOST, top
    folders = {path.parent for path in LIBRARY.rglob("*.py")} - {LIBRARY}
    assert all((folder / "__init__.py").is_file() for folder in folders), "a folder without __init__.py"
    for init in LIBRARY.glob("*/__init__.py"):
        assert len(ast.get_docstring(ast.parse(init.read_text())) or "") > 80, f"{init}: say the package's role"
    # each folder is a package at the top of the library, with its rule (no nested package without one)
    assert set(package_rules()) == {f"dyninf.{folder.name}" for folder in folders}


def test_the_packages_rules_form_layers_without_a_loop():
    named = set().union(*package_rules().values()) - set(library_modules())
    assert not named, f"rules name packages that do not exist: {sorted(named)}"
    assert package_rules()["dyninf.utils"] == frozenset(), "the utilities sit below every package"
    graphlib.TopologicalSorter({package: allowed & set(package_rules())
                                for package, allowed in package_rules().items()}).prepare()   # CycleError


def test_every_module_imports_only_what_its_package_may():
    assert not offending_imports(library_modules()), "\n".join(offending_imports(library_modules()))


def test_an_upward_import_and_one_into_the_bottom_are_caught(tmp_path):
    # the check above reads the real tree; here the same check reads planted modules
    upward = tmp_path / "backbones.py"
    upward.write_text("from dyninf.course.profiles import Profile\nfrom dyninf.network import skipping\n"
                      "import dyninf.decisions\n")
    assert imported_modules(upward) == {"dyninf.course.profiles", "dyninf.network.skipping", "dyninf.decisions"}
    assert offending_imports({"dyninf.network.backbones": upward}) == [
        "dyninf.network.backbones imports dyninf.course.profiles (dyninf.network may import: dyninf.data, "
        "dyninf.decisions, dyninf.utils)"]
    bottom = tmp_path / "decisions.py"
    bottom.write_text("from dyninf.utils.paths import course_root\n")
    assert len(offending_imports({BOTTOM: bottom})) == 1


def test_no_module_imports_another_in_a_circle():
    graph = {module: imported_modules(path) & set(library_modules()) for module, path in library_modules().items()}
    graphlib.TopologicalSorter(graph).prepare()   # raises CycleError, naming the circle


@functools.lru_cache(maxsize=None)
def modules_loaded_by(module: str) -> frozenset[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=course_root(), check=True)
    return frozenset(finished.stdout.split())


def _loaded_above(loaded: frozenset[str]) -> list[str]:
    return sorted(name for name in loaded if any(name == top or name.startswith(top + ".") for top in ABOVE))


# the dynamic network loads inference, cost, the backbone and the decision protocol: all of the
# bottom layers but the deciders (stochastic depth is torchvision.ops')
@pytest.mark.parametrize("module, packages_used", [("dyninf.network.dynamic", "torch"),
                                                   ("dyninf.deciders", "torch, torchvision")])
def test_the_lower_layers_load_neither_training_nor_the_data_stack(module, packages_used):
    # less what the packages it uses load themselves (PyTorch may load tqdm, torchvision PIL)
    loaded = modules_loaded_by(module) - modules_loaded_by(packages_used)
    assert module in loaded
    assert not _loaded_above(loaded), f"importing {module} loads {_loaded_above(loaded)}"


@pytest.mark.parametrize("module", sorted(BELOW))
def test_the_decision_protocol_and_the_backbone_load_only_what_is_below_them(module):
    library = {name for name in modules_loaded_by(module) if name.split(".")[0] == "dyninf"}
    assert library == BELOW[module]


def test_no_module_of_the_library_imports_another_inside_a_function():
    # a lazy import is how an upward import hides a loop; only the top-level ones are allowed
    offenders = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith((" ", "\t")) and line.strip().startswith(("from dyninf", "import dyninf")):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders
