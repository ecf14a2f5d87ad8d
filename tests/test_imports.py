"""Imports point one way: the backbone and the deciders load neither the training loop nor the data
stack (each is imported in a fresh interpreter, where nothing else has loaded them yet)."""
import functools
import subprocess
import sys

import pytest

from dyninf.paths import course_root

# the training loop, data and the notebooks' helpers, and the heavy packages only they need
ABOVE = ("dyninf.fitting", "dyninf.networks", "dyninf.data", "dyninf.profiles", "dyninf.frontier",
         "pandas", "PIL", "tqdm", "matplotlib")
# what each module may load of the library: the layers below it
BELOW = {
    "dyninf.decisions": {"dyninf", "dyninf.decisions"},
    "dyninf.backbones": {"dyninf", "dyninf.decisions", "dyninf.backbones", "dyninf.skipping", "dyninf.folding"},
}


@functools.lru_cache(maxsize=None)
def modules_loaded_by(module: str) -> frozenset[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd=course_root(), check=True)
    return frozenset(finished.stdout.split())


# the dynamic network loads inference, cost, the backbone and the decision protocol: all of the
# bottom layers but the deciders (stochastic depth is torchvision.ops')
@pytest.mark.parametrize("module, packages_used", [("dyninf.dynamic", "torch"),
                                                   ("dyninf.deciders", "torch, torchvision")])
def test_the_lower_layers_load_neither_training_nor_the_data_stack(module, packages_used):
    # less what the packages it uses load themselves (PyTorch may load tqdm, torchvision PIL)
    loaded = modules_loaded_by(module) - modules_loaded_by(packages_used)
    assert module in loaded
    assert not loaded & set(ABOVE), f"importing {module} loads {sorted(loaded & set(ABOVE))}"


@pytest.mark.parametrize("module", sorted(BELOW))
def test_the_decision_protocol_and_the_backbone_load_only_what_is_below_them(module):
    library = {name for name in modules_loaded_by(module) if name.split(".")[0] == "dyninf"}
    assert library == BELOW[module]


def test_no_module_of_the_library_imports_another_inside_a_function():
    # a lazy import is how an upward import hides a loop; only the top-level ones are allowed
    offenders = []
    for path in sorted((course_root() / "lib" / "dyninf").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith((" ", "\t")) and line.strip().startswith(("from dyninf", "import dyninf")):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders
