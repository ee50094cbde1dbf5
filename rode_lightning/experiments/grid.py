"""A grid of runs: a base configuration, variant overlays and seeds, read from one YAML file.

```yaml
base: [configs/demo.yaml]            # configs every run starts from (paths relative to the working directory)
arguments: ["--trainer.max_epochs", "3"]   # CLI overrides every run gets, to size the grid
variants:                            # name -> overlays on top of the base (may be empty: the base itself)
  rode_2_4_8_16:                     # or overlays and the variant's own seeds
    overlays: [configs/variants/rode_2_4_8_16.yaml]
    seeds: [0, 1, 2, 3, 4]
  lora_r32: [configs/variants/lora_r32.yaml]
reference: rode_2_4_8_16             # paired differences are taken against this variant
seeds: [0, 1, 2]                     # every variant's seeds unless it names its own
output: logs/grids/demo              # every run in <output>/runs/<variant>/seed_<s>, the report in <output>/report
checkpoint_every_n_steps: 50         # how often a fit keeps last.ckpt, where an interrupted run resumes
```

Each (variant, seed) is an ordinary ``fit`` then ``test`` through the CLI (:mod:`rode_lightning.experiments.runner`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rode_lightning.data.legacy_keys import rewrite_arguments
from rode_lightning.user_errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class GridError(UserError):
    """A grid file that cannot be run; the message names the file and the field."""


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    overlays: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.variant}/seed_{self.seed}"


@dataclass
class Grid:
    path: Path
    base: list[str]
    variants: dict[str, list[str]]
    seeds: list[int]
    reference: str
    output: Path
    arguments: list[str] = field(default_factory=list)
    checkpoint_every_n_steps: int = 50
    variant_seeds: dict[str, list[int]] = field(default_factory=dict)  # variants with seeds of their own

    def seeds_of(self, variant: str) -> list[int]:
        return self.variant_seeds.get(variant, self.seeds)

    @property
    def all_seeds(self) -> list[int]:
        """Every seed some variant runs, in order of first mention."""
        return list(dict.fromkeys([*self.seeds, *(s for seeds in self.variant_seeds.values() for s in seeds)]))

    @property
    def runs(self) -> list[Run]:
        """Seed-major order: every variant's first seed comes before any second seed, so a grid stopped early
        still compares all variants."""
        return [Run(variant, seed, tuple(overlays)) for seed in self.all_seeds
                for variant, overlays in self.variants.items() if seed in self.seeds_of(variant)]

    @classmethod
    def from_file(cls, path: str | Path, output: str | None = None) -> "Grid":
        path = Path(path)
        if not path.is_file():
            raise GridError(f"{path}: grid file not found")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise GridError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(raw, dict):
            raise GridError(f"{path}: expected a mapping with base, variants, seeds, reference, output")
        unknown = sorted(set(raw) - {"base", "arguments", "variants", "seeds", "reference", "output",
                                     "checkpoint_every_n_steps"})
        if unknown:
            raise GridError(f"{path}: unknown field(s) {unknown}; expected base, arguments, variants, seeds, "
                            "reference, output, checkpoint_every_n_steps")

        def strings(name: str, value, allow_empty: bool = False) -> list[str]:
            if value is None and allow_empty:
                return []
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value) or (
                    not value and not allow_empty):
                raise GridError(f"{path}: {name} must be a {'' if allow_empty else 'non-empty '}list of strings, "
                                f"got {value!r}")
            return list(value)

        base = strings("base", raw.get("base"))
        variants_raw = raw.get("variants")
        if not isinstance(variants_raw, dict) or not variants_raw:
            raise GridError(f"{path}: variants must map names to lists of overlay files, got {variants_raw!r}")
        def seed_list(name: str, value) -> list[int]:
            if (not isinstance(value, list) or not value or not all(isinstance(s, int) and s >= 0 for s in value)
                    or len(set(value)) != len(value)):
                raise GridError(f"{path}: {name} must be a non-empty list of distinct integers >= 0, got {value!r}")
            return list(value)

        variants, variant_seeds = {}, {}
        for name, overlays in variants_raw.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise GridError(f"{path}: variant name {name!r} must be letters, digits, '_', '.' or '-'")
            if isinstance(overlays, dict):
                extra = sorted(set(overlays) - {"overlays", "seeds"})
                if extra:
                    raise GridError(f"{path}: variants.{name}: unknown field(s) {extra}; expected overlays, seeds")
                if "seeds" in overlays:
                    variant_seeds[name] = seed_list(f"variants.{name}.seeds", overlays["seeds"])
                overlays = overlays.get("overlays")
            variants[name] = strings(f"variants.{name}", overlays, allow_empty=True)
        seeds = seed_list("seeds", raw.get("seeds"))
        reference = raw.get("reference", next(iter(variants)))
        if reference not in variants:
            raise GridError(f"{path}: reference {reference!r} is not a variant (variants: {', '.join(variants)})")
        for file in base + [overlay for overlays in variants.values() for overlay in overlays]:
            if not Path(file).is_file():
                raise GridError(f"{path}: config file {file} not found (paths are relative to the working "
                                "directory)")
        out = output or raw.get("output")
        if not isinstance(out, str) or not out:
            raise GridError(f"{path}: output must be a directory path, got {out!r}")
        every = raw.get("checkpoint_every_n_steps", 50)
        if not isinstance(every, int) or every < 1:
            raise GridError(f"{path}: checkpoint_every_n_steps must be a positive integer, got {every!r}")
        arguments = strings("arguments", raw.get("arguments"), allow_empty=True)
        return cls(path, base, variants, seeds, reference, Path(out), _today_keys(path, arguments), every,
                   variant_seeds)


def _today_keys(path: Path, arguments: list[str]) -> list[str]:
    """The grid's arguments with the flat old data keys in today's form (``data/legacy_keys.py``); old source keys
    (``--data.unifood_root``, ...) stay, for the command line to merge with each run's config files."""
    rewritten, places = rewrite_arguments(arguments, config_files=False)
    if places:
        warnings.warn(f"{path}: arguments: old data keys ({'; '.join(places)}) rewritten; write the new keys in the "
                      "grid file", FutureWarning, stacklevel=3)
    return rewritten
