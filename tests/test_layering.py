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
    # serving, the web demo and export / merge are handed the CLI's model builder (below the CLI, which starts them)
    "experiments": 6, "serving": 6, "webdemo": 6, "export": 6,
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


DATASETS_FOLDER = PACKAGE / "data" / "datasets"


def test_no_dataset_folder_imports_another():
    """A dataset is a folder (``data/datasets/<name>/``): it imports the shared data modules, never another
    dataset's folder, so that one can be added, changed or removed alone."""
    folders = sorted(path for path in DATASETS_FOLDER.iterdir() if (path / "__init__.py").is_file())
    assert {folder.name for folder in folders} >= {"unifood", "nutrition5k", "recipe1m", "food101", "vireo172",
                                                   "huggingface"}
    crossing = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            for module in _imports(path):
                parts = module.split(".")
                if parts[:3] == ["rode_lightning", "data", "datasets"] and len(parts) > 3 and parts[3] not in (
                        folder.name, "base"):
                    crossing.append(f"{path.relative_to(PACKAGE)} imports {module}")
                if module == "rode_lightning.data.datasets":
                    crossing.append(f"{path.relative_to(PACKAGE)} imports the registry")
    assert not crossing, "\n".join(crossing)


def test_no_function_of_the_data_package_is_over_50_lines():
    long = []
    for path in sorted((PACKAGE / "data").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{path.relative_to(PACKAGE)}: {node.name} ({lines} lines)")
    assert not long, "split these into named steps: " + ", ".join(long)


def test_the_data_module_takes_at_most_12_arguments():
    import inspect

    from rode_lightning.data.datamodule import FoodDataModule

    parameters = list(inspect.signature(FoodDataModule.__init__).parameters)[1:]
    assert len(parameters) <= 12, parameters
