"""README.md's "Adding a dataset" example, run as it stands: its python block registers a plug-in that reads its
layout into records (bad rows named or skipped), and its YAML serves that plug-in through ``data.sources``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import rode_lightning.data.datasets as registry
from rode_lightning.data.datamodule import FoodDataModule
from rode_lightning.data.datasets import FoodDataset, ReadRequest
from rode_lightning.data.errors import DataFormatError, SkipCounter
from rode_lightning.data.prompts import task_available

REPO = Path(__file__).parents[2]
TITLE = "Adding a dataset"


def section(text: str, title: str) -> str | None:
    """The text under the ``## <title>`` heading, up to the next heading of its level or above (outside code
    blocks, whose comments may start with ``#``)."""
    lines, inside, fenced = [], False, False
    for line in text.splitlines():
        if not fenced and re.match(r"#{1,2} ", line):
            if inside:
                break
            inside = line == f"## {title}"
            continue
        fenced ^= line.startswith("```")
        if inside:
            lines.append(line)
    return "\n".join(lines) + "\n" if lines else None


def example() -> str:
    text = section((REPO / "README.md").read_text(), TITLE)
    assert text, f"README.md has no '## {TITLE}' section"
    return text


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", example(), re.DOTALL | re.MULTILINE)


@pytest.fixture
def plug_in(monkeypatch) -> FoodDataset:
    """The example's python block executed as a script imported under its own name (not ``__main__``: its command
    line is not started); what it registers is left out of the package's registry afterwards."""
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    before = set(registry.DATASETS)
    code = "\n".join(block for block in blocks("python") if not block.startswith("class Conversations("))
    exec(compile(code, f"README.md ({TITLE})", "exec"), {"__name__": "my_dishes"})
    added = [registry.DATASETS[name] for name in registry.DATASETS if name not in before]
    assert len(added) == 1, "the example registers one dataset"
    return added[0]


def test_the_example_registers_a_dataset_that_reads_its_layout(plug_in, tmp_path):
    root = tmp_path / "copy"
    plug_in.write_demo(root, 0, None)
    read = {split: plug_in.read(root, plug_in.options(), ReadRequest(split, name="mine"))
            for split in ("train", "val", "test")}
    assert all(read.values()) and {record.dataset for records in read.values() for record in records} == {"mine"}
    assert {r.id for r in read["train"]}.isdisjoint(r.id for r in read["val"])  # val held out of train.csv
    for record in read["train"]:
        assert Path(record.image).is_file() and record.category and record.ingredients
        assert [task for task in plug_in.tasks if task_available(record, task)] == list(plug_in.tasks)
    # A bad row is named by file and line, or skipped and counted.
    with (root / "test.csv").open("a") as file:
        file.write("images/nowhere.png,salad,lettuce\n")
    with pytest.raises(DataFormatError, match=r"test.csv:10: missing image"):
        plug_in.read(root, plug_in.options(), ReadRequest("test"))
    skipped = SkipCounter()
    assert len(plug_in.read(root, plug_in.options(), ReadRequest("test", on_error="skip", skipped=skipped))) == 8
    assert sum(skipped.values()) == 1


def test_the_example_yaml_serves_the_plug_in_through_data_sources(plug_in, tmp_path):
    (config,) = [yaml.safe_load(block) for block in blocks("yaml") if plug_in.name in block]
    source = config["data"]["sources"][0]
    assert source["dataset"] == plug_in.name
    plug_in.write_demo(tmp_path / "copy", 0, None)
    module = FoodDataModule(sources=[{**source, "root": str(tmp_path / "copy")}], demo_dir=str(tmp_path / "demo"))
    module.setup("fit")
    train = module.datasets["train"]
    assert {sample.task for sample in train.samples} == set(plug_in.tasks)
    assert {sample.record.dataset for sample in train.samples} == {plug_in.name}
    assert train[0].reference and train[0].image.size == (64, 64)


def test_the_shipped_conversation_plug_in_is_the_one_readme_shows(tmp_path):
    """README's "A shipped one" block is the Conversations class as it stands: executed in its module's namespace,
    it reads the demo copy into the same records as the registered dataset."""
    import rode_lightning.data.datasets.conversations as module
    from rode_lightning.data.datasets import DATASETS, ReadRequest

    (shown,) = [block for block in blocks("python") if block.startswith("class Conversations(FoodDataset):")]
    assert shown in Path(module.__file__).read_text()
    namespace = dict(vars(module))
    exec(compile(shown, "README.md", "exec"), namespace)
    registered = DATASETS["conversations"]
    registered.write_demo(tmp_path, 0, {"train": 24, "test": 4})
    options = module.ConversationOptions()
    shown_records = namespace["Conversations"]().read(tmp_path, options, ReadRequest("test"))
    assert shown_records and shown_records == registered.read(tmp_path, options, ReadRequest("test"))
