"""Writing any dataset the tool reads out as a Uni-Food folder, to assemble one's own Uni-Food-style mix.

::

    python -m rode_lightning.data.convert --from food101 --root /data/food-101 --to /data/food101_unifood
    python -m rode_lightning.data.convert --from huggingface --config my_dataset.yaml --to /data/mine_unifood

The output is the Uni-Food format of README.md: ``annotations/<split>.jsonl`` and the images under ``images/``,
read back by :func:`~rode_lightning.data.datasets.unifood.reader.read_unifood_split` into the same records (the test
checks the round trip). Splits the source holds are written as they are served, so a held-out ``val`` of Food-101 or
Nutrition5k becomes a ``val.jsonl`` of its own and stays the same dishes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from rode_lightning.atomic import write_text_atomically
from rode_lightning.data.errors import MissingSplitError, SkipCounter
from rode_lightning.data.records import FoodRecord
from rode_lightning.data.datasets import DATASETS
from rode_lightning.data.legacy_keys import huggingface_block_as_source
from rode_lightning.data.sources import DatasetSource, ServedDataset, as_source, serve_source
from rode_lightning.data.splits import DEFAULT_VAL_FRACTION
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError, UserError

SPLITS = ("train", "val", "test")


def unifood_line(record: FoodRecord, image: str) -> dict:
    """One Uni-Food record (``image`` relative to the output folder); fields the record lacks are left out."""
    line: dict = {"id": record.id, "image": image}
    if record.category is not None:
        line["category"] = record.category
    if record.ingredients:
        line["ingredients"] = [{"name": item.name, "grams": item.grams} for item in record.ingredients]
    if record.recipe:
        line["recipe"] = list(record.recipe)
    if record.nutrition:
        line["nutrition"] = dict(record.nutrition)
    if record.conversations:
        line["conversations"] = {task: {"question": question, "answer": answer}
                                 for task, (question, answer) in record.conversations.items()}
    return line


def write_unifood_split(records: list[FoodRecord], out: Path, split: str, link: bool = False) -> Path:
    """``out/annotations/<split>.jsonl`` and its images (copied, or symbolic links with ``link``; an image stored
    inside a dataset is written as PNG). The annotation file is written last and complete or absent
    (:mod:`rode_lightning.atomic`), so an interrupted conversion never leaves a split that looks complete."""
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, record in enumerate(progress(records, f"converting {split}", "record")):
        if isinstance(record.image, str):
            target = image_dir / f"{index:06d}{Path(record.image).suffix.lower() or '.jpg'}"
            if target.exists() or target.is_symlink():
                target.unlink()
            if link:
                target.symlink_to(Path(record.image).absolute())
            else:
                shutil.copyfile(record.image, target)
        else:
            target = image_dir / f"{index:06d}.png"
            with record.image.open() as image:
                image.convert("RGB").save(target)
        lines.append(json.dumps(unifood_line(record, str(target.relative_to(out)))))
    return write_text_atomically(out / "annotations" / f"{split}.jsonl", "".join(f"{line}\n" for line in lines))


def served_dataset(name: str, root: str | None, config: str | None,
                   val_fraction: float = DEFAULT_VAL_FRACTION) -> ServedDataset:
    """The dataset to convert: a registered dataset's folder at ``root``, or for ``huggingface`` the column mapping
    in the YAML ``config`` (a ``data.sources`` entry, or the keys of an old ``data.huggingface`` block)."""
    if name not in DATASETS:
        raise UserError(f"--from {name!r}: expected one of {', '.join(DATASETS)}")
    if name == "conversations":  # Uni-Food has no turns: a conversation would be written without them
        raise UserError("--from conversations: a conversation is not a Uni-Food dish and would lose its turns; serve "
                        "the folder as it is, as a data.sources entry (dataset: conversations)")
    if name == "huggingface":
        return serve_source(_huggingface_source(config, val_fraction), config, Path("."))
    if root is None:
        raise UserError(f"--from {name} needs --root: the {DATASETS[name].title} folder")
    # Not checked before reading: each reader names a missing or foreign root in its own words.
    dataset = DATASETS[name]
    source = DatasetSource(name, root=root, val_fraction=val_fraction)
    return ServedDataset(name, dataset, Path(root), False, dataset.tasks, dataset.options(), source, "--root")


def _huggingface_source(config: str | None, val_fraction: float) -> DatasetSource:
    if config is None:
        raise UserError("--from huggingface needs --config: a YAML file with the source's keys (dataset, root, "
                        "options with the column mapping; README.md)")
    path = Path(config)
    if not path.is_file():
        raise MissingFileError(f"--config {path} does not exist")
    try:
        block = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise UserError(f"--config {path}: not UTF-8 text (byte {error.start}); expected a YAML file") from None
    if not isinstance(block, dict):
        raise UserError(f"{path}: expected the keys of one data.sources entry")
    if "path" in block:  # an old data.huggingface block
        block = huggingface_block_as_source(block)
    if not block.get("root"):
        raise UserError(f"{path}: no root: the dataset's folder or parquet file(s) to convert")
    return as_source({"dataset": "huggingface", **block, "val_fraction": val_fraction}, str(path))


def convert(dataset: ServedDataset, out: Path, link: bool = False, on_error: str = "raise") -> dict[str, int]:
    """Writes every split ``dataset`` has into ``out``; returns the records written per split.

    Every split is read before anything is written, so a bad record in ``test`` leaves no half-converted folder. A
    dataset without a train split is refused (as by the data module); a missing val or test split is reported."""
    skipped = SkipCounter()
    splits: dict[str, list[FoodRecord]] = {}
    for split in SPLITS:
        try:
            splits[split] = dataset.read(split, on_error, skipped)
        except MissingSplitError as missing:
            if split == "train":
                raise
            print(f"{split}: not written ({missing})", file=sys.stderr)
    for split, records in splits.items():
        write_unifood_split(records, out, split, link)
    if skipped:
        print(f"skipped: {skipped.report()}", file=sys.stderr)
    return {split: len(records) for split, records in splits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rode_lightning.data.convert", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--root", help="the dataset's folder, in its released layout")
    parser.add_argument("--config",
                        help="for --from huggingface: a YAML file with one data.sources entry (its root and options)")
    parser.add_argument("--to", dest="out", required=True, help="the Uni-Food folder to write")
    parser.add_argument("--link", action="store_true", help="link the images instead of copying them")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="stop at the first bad record, or skip it and report the count")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of train held out as val where the dataset has no val split")
    args = parser.parse_args(argv)
    try:
        dataset = served_dataset(args.source, args.root, args.config, args.val_fraction)
        written = convert(dataset, Path(args.out), args.link, args.on_error)
    # The user's input (or a folder they cannot write to), not a bug: one line, no traceback. Any other error is a
    # bug and keeps its traceback.
    except (UserError, yaml.YAMLError, PermissionError) as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {count}" for split, count in written.items())
    print(f"wrote {dataset.name} as Uni-Food to {args.out}: {counts} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
