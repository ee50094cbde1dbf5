"""The package's floors (README.md, Layout): no module imports one of a higher floor, or one beside it on its own
floor, so the house has no arrow running back up and no cycle."""

import ast
from pathlib import Path

import rode_lightning

PACKAGE = Path(rode_lightning.__file__).parent

FLOORS = {
    # the ground: vocabulary and utilities every package shares, importing nothing of the project
    "conventions": 1, "atomic": 1, "messages": 1, "progress": 1, "provenance": 1, "console": 1, "user_errors": 1,
    "dtensors": 1, "compat": 1, "batch": 1,
    "adapters": 2, "metrics": 2,
    "data": 3, "callbacks": 3, "scale": 3,
    "model": 4,
    "pretrain": 5, "inference": 5,
    # serving and the web demo are handed the CLI's model builder (they are below the CLI, which starts them)
    "experiments": 6, "serving": 6, "webdemo": 6,
    "cli": 7,
    "estimate": 8, "__main__": 8, "__init__": 8,  # the estimate parses configs with the CLI's own parser
}


def _unit(module: str) -> str:
    """``rode_lightning.metrics.parsing`` -> ``metrics``."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rode_lightning."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rode_lightning."))
    return found


def test_every_module_of_the_package_has_a_floor():
    units = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.glob("*")
             if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists())}
    assert units <= set(FLOORS), f"add to FLOORS (and README.md's Layout): {sorted(units - set(FLOORS))}"


def test_no_import_runs_up_or_sideways():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        unit = relative.parts[0].removesuffix(".py")
        for module in _imports(path):
            target = _unit(module)
            if target != unit and FLOORS[target] >= FLOORS[unit]:
                wrong.append(f"{relative} (floor {FLOORS[unit]}) imports {module} (floor {FLOORS[target]})")
    assert not wrong, "\n".join(wrong)


def test_the_shared_vocabulary_has_one_home():
    from rode_lightning import conventions
    from rode_lightning.data import prompts, records
    from rode_lightning.metrics import ingredient_parsing

    # Re-imported where used, defined once: the objects are the ground floor's own.
    assert prompts.TASKS is conventions.TASKS and records.NUTRITION_FIELDS is conventions.NUTRITION_FIELDS
    assert ingredient_parsing.normalize_ingredient is conventions.normalize_ingredient
    for path in PACKAGE.rglob("*.py"):
        if path.name != "conventions.py":
            text = path.read_text()
            assert "IGNORE_INDEX = " not in text and 'IMAGE_PLACEHOLDER = "' not in text, path


def test_a_module_over_400_lines_says_why_at_its_top():
    """Small modules are the rule; a longer one keeps its length only with a reason in its docstring."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > 400 and "over 400 lines" not in " ".join(docstring.split()):
            unexplained.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
    assert not unexplained, "split these or say why at the top: " + ", ".join(unexplained)
