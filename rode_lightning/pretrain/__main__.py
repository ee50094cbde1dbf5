"""``python -m rode_lightning.pretrain [--demo_dir DIR] [--force]``: build the demo base now (the demo builds it on
first use otherwise) and print where its files are."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rode_lightning.data.datamodule import default_demo_dir
from rode_lightning.pretrain.build import build_demo_base


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rode_lightning.pretrain", description=__doc__)
    parser.add_argument("--demo_dir", default=None, help="the demo cache (default ~/.cache/rode_lightning/demo)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a base of this recipe exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    root = Path(args.demo_dir).expanduser() if args.demo_dir else default_demo_dir()
    base = build_demo_base(root / "base", force=args.force)
    print(f"model.vision.checkpoint: {base.vision_checkpoint}")
    print(f"model.language.path:     {base.llava}")
    print(f"model.tokenizer:         {base.llava}")


if __name__ == "__main__":
    main()
