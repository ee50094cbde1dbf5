"""A stand-in for your own food photos, for README.md's "Train on your own data" example.

Writes the layout a person who photographs dishes and labels them in a spreadsheet ends up with, and which the
`datasets` library reads as an ``imagefolder`` dataset::

    <out>/train/<n>.jpg  + <out>/train/metadata.csv   (file_name, dish, ingredients)
    <out>/test/<n>.jpg   + <out>/test/metadata.csv

The photos are the demo's drawn plates (a different seed from every demo split), because no real photo can be
downloaded here; with your own photos, skip this script and write the two ``metadata.csv`` files yourself.

    python scripts/example_photos.py my_photos [--train 160] [--test 32] [--seed 11]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from rode_lightning.data.dishes import draw_dish, sample_dish


def write_example_photos(out: Path, sizes: dict[str, int], seed: int = 11, image_size: int = 96) -> Path:
    rng = np.random.default_rng([seed, 2026])
    for split, count in sizes.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            dish, ingredients = sample_dish(rng)
            name = f"{index:04d}.jpg"
            draw_dish(ingredients, rng, image_size).save(folder / name, quality=95)
            rows.append({"file_name": name, "dish": dish,
                         "ingredients": ", ".join(item["name"] for item in ingredients)})
        with open(folder / "metadata.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file_name", "dish", "ingredients"])
            writer.writeheader()
            writer.writerows(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    write_example_photos(args.out, {"train": args.train, "test": args.test}, args.seed)
    print(f"wrote {args.train} training and {args.test} test photos with metadata.csv into {args.out}")


if __name__ == "__main__":
    main()
