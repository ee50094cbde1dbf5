"""Configs written before ``data.sources``: their data keys rewritten to today's form, with a warning showing it.

Until issue 28 the data module took a root per dataset (``data.unifood_root``, ...), a ``data.datasets`` filter,
``data.huggingface`` blocks, ``data.sampling_weights``, ``data.val_fraction``, the demo's sizes
(``data.demo_train_size``, ...) and flat task, cluster and predict keys. A config (or a run's saved
``config.yaml``) with those keys still runs: the command line, the estimate's parser and the grid runner rewrite
them here before parsing, and the warning shows what to write instead. The rewriting is pure (mappings in,
mappings out), so that a test can check every file of ``configs/`` gives the same configuration in both spellings.
"""

from __future__ import annotations

from typing import Any

from rode_lightning.user_errors import UserError

ROOT_KEYS: dict[str, str] = {f"{name}_root": name for name in ("unifood", "nutrition5k", "recipe1m", "food101",
                                                               "vireo172")}
"""``data.<dataset>_root`` -> the dataset it was the root of."""

SOURCE_KEYS: tuple[str, ...] = ("datasets", *ROOT_KEYS, "huggingface", "sampling_weights", "val_fraction",
                                "demo_seed", "demo_train_size", "demo_eval_size", "demo_nutrition5k_size")
"""Old keys that together become ``data.sources``."""

RENAMED: dict[str, tuple[str, str]] = {
    "train_tasks": ("tasks", "train"), "eval_tasks": ("tasks", "eval"),
    "num_clusters": ("clusters", "count"), "cluster_encoder": ("clusters", "encoder"),
    "instruction_clusters": ("clusters", "saved"),
    "predict_source": ("predict", "source"), "predict_tasks": ("predict", "tasks"),
}
"""Old flat keys -> their group and field today."""

DROPPED: tuple[str, ...] = ("tokenizer", "image_size", "num_image_tokens")
"""Keys earlier versions accepted and ignored (the model's conversation format owns them)."""

LEGACY_KEYS: tuple[str, ...] = (*SOURCE_KEYS, *RENAMED, *DROPPED)

_DEFAULT_DEMO = ("unifood", "nutrition5k")


def huggingface_block_as_source(block: dict[str, Any]) -> dict[str, Any]:
    """An old ``data.huggingface`` entry (``path``, ``name``, columns) as a ``data.sources`` entry."""
    columns = {key: value for key, value in block.items() if key not in ("path", "name")}
    source = {"dataset": "huggingface", "root": block.get("path"), "name": block.get("name", "huggingface")}
    if source["name"] == "huggingface":
        del source["name"]
    return {**source, **({"options": columns} if columns else {})}


def sources_from_legacy(legacy: dict[str, Any], base: list[dict] | None = None) -> list[dict] | None:
    """The ``data.sources`` the old source keys meant. ``base``: a ``data.sources`` set before them (a new-style
    config), which an old ``data.datasets`` filters. ``None`` when they meant the default demo."""
    sources = _configured(legacy)
    demo = not sources
    if demo and base is not None:
        sources, demo = [dict(entry) for entry in base], all(entry.get("root") is None for entry in base)
    names = legacy.get("datasets")
    if demo and not sources:
        sources = [{"dataset": name} for name in (names or _DEFAULT_DEMO)]
    if names is not None:
        sources = _filtered(sources, names, demo)
    _apply_settings(sources, legacy)
    if all(set(entry) == {"dataset"} for entry in sources) and [e["dataset"] for e in sources] == list(_DEFAULT_DEMO):
        return None  # exactly the default demo: say so by leaving data.sources unset
    return sources


def _configured(legacy: dict[str, Any]) -> list[dict]:
    sources = [{"dataset": dataset, "root": legacy[key]} for key, dataset in ROOT_KEYS.items()
               if legacy.get(key) is not None]
    for block in legacy.get("huggingface") or []:
        if not isinstance(block, dict) or "path" not in block:
            raise UserError(f"data.huggingface: {block!r} - expected a mapping with a path (or write data.sources)")
        sources.append(huggingface_block_as_source(block))
    return sources


def _filtered(sources: list[dict], names: list[str], demo: bool) -> list[dict]:
    if not isinstance(names, list) or not names:
        raise UserError(f"data.datasets: {names!r} - expected a non-empty list of dataset names")
    by_name = {entry.get("name", entry["dataset"]): entry for entry in sources}
    kept = []
    for name in names:
        if name in by_name:
            kept.append(by_name[name])
        elif demo:
            kept.append({"dataset": name})
        else:
            raise UserError(f"data.datasets lists {name!r}, which has no data: set data.{name}_root (today: a "
                            f"data.sources entry with a root), or remove {name!r} from data.datasets")
    return kept


def _apply_settings(sources: list[dict], legacy: dict[str, Any]) -> None:
    """Sampling weights, the hold-out share and the demo's seed and sizes, onto the sources they concern."""
    weights = legacy.get("sampling_weights") or {}
    for entry in sources:
        name = entry.get("name", entry["dataset"])
        if name in weights:
            entry["weight"] = weights[name]
        task_weights = {key.partition("/")[2]: value for key, value in weights.items()
                        if key.partition("/")[0] == name and "/" in key}
        if task_weights:
            entry["task_weights"] = task_weights
        if weights and name not in weights and not task_weights:
            entry["weight"] = 1.0  # weighted draws for every source once any weight is given
        if legacy.get("val_fraction") is not None:
            entry["val_fraction"] = legacy["val_fraction"]
        if entry.get("root") is None:
            _apply_demo_settings(entry, legacy)


def _apply_demo_settings(entry: dict, legacy: dict[str, Any]) -> None:
    if legacy.get("demo_seed") is not None:
        entry["demo_seed"] = legacy["demo_seed"]
    if entry["dataset"] == "unifood" and (legacy.get("demo_train_size") is not None
                                          or legacy.get("demo_eval_size") is not None):
        sizes = entry.get("demo_sizes") or {"train": 800, "val": 64, "test": 64}
        train, held = legacy.get("demo_train_size", sizes["train"]), legacy.get("demo_eval_size", sizes["val"])
        entry["demo_sizes"] = {"train": train, "val": held, "test": held}
    if entry["dataset"] == "nutrition5k" and legacy.get("demo_nutrition5k_size") is not None:
        total = legacy["demo_nutrition5k_size"]
        entry["demo_sizes"] = {"train": total - total // 5, "test": total // 5}


def rewrite_data_section(data: dict[str, Any], base: list[dict] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``data`` with its old keys in today's form, and the old keys found (empty: nothing to rewrite)."""
    found = [key for key in data if key in LEGACY_KEYS]
    if not found:
        return data, []
    rewritten = {key: value for key, value in data.items() if key not in LEGACY_KEYS}
    for key, (group, field) in RENAMED.items():
        if key in data:
            rewritten.setdefault(group, {})
            rewritten[group] = {**(rewritten[group] or {}), field: data[key]}
    legacy = {key: data[key] for key in SOURCE_KEYS if key in data}
    if legacy:
        rewritten["sources"] = sources_from_legacy(legacy, data.get("sources", base))
    return rewritten, found


def rewrite_arguments(args: list[str], config_files: bool = True) -> tuple[list[str], list[str]]:
    """A command line (``--config`` files, ``--data.<key>`` flags) with every old data key in today's form, and one
    warning per place that had some. Config files with old keys are read through a rewritten copy in a temporary
    folder; the old source keys of all files and flags merge in order (a later one wins, as the parser merges them)
    into one ``--data.sources`` placed after the last of them. ``config_files=False`` leaves ``--config`` files as
    they are (a grid's commands: the command line rewrites them when each run starts)."""
    import yaml

    rewritten: list[str] = []
    warnings: list[str] = []
    legacy: dict[str, Any] = {}
    base: list[dict] | None = None  # the last data.sources set in today's form
    insert_at, base_then = None, None
    index = 0
    while index < len(args):
        flag, value, width = _split_flag(args, index)
        if flag == "--config" and value is not None and config_files:
            path, found, sources = _rewrite_config_file(value, legacy)
            if sources is not _UNSET:
                base = sources
            rewritten += ["--config", path]
            if found:
                warnings.append(f"--config {value}: " + ", ".join(f"data.{key}" for key in found))
                insert_at, base_then = (len(rewritten), base) if any(key in SOURCE_KEYS for key in found) else (
                    insert_at, base_then)
        elif flag is not None and flag.startswith("--data.") and flag[7:] in LEGACY_KEYS and value is not None:
            key = flag[7:]
            warnings.append(f"{flag}")
            if key in RENAMED:
                group, field = RENAMED[key]
                rewritten += [f"--data.{group}.{field}", value]
            elif key in SOURCE_KEYS:
                legacy[key] = yaml.safe_load(value)
                insert_at, base_then = len(rewritten), base
        else:
            if flag == "--data.sources" and value is not None:
                base = yaml.safe_load(value)
            rewritten += args[index:index + width]
        index += width
    if legacy:
        sources = sources_from_legacy(legacy, base_then)
        rewritten.insert(insert_at, f"--data.sources={_flow(sources)}")
        warnings.append(f"read as data.sources: {_flow(sources)}")
    return rewritten, warnings


_UNSET = object()


def _split_flag(args: list[str], index: int) -> tuple[str | None, str | None, int]:
    """``(flag, value, how many arguments they take)`` at ``index``: ``--key value`` or ``--key=value``."""
    argument = args[index]
    if not argument.startswith("--"):
        return None, None, 1
    if "=" in argument:
        flag, value = argument.split("=", 1)
        return flag, value, 1
    value = args[index + 1] if index + 1 < len(args) else None
    return argument, value, 2 if value is not None else 1


def _rewrite_config_file(path: str, legacy: dict[str, Any]) -> tuple[str, list[str], Any]:
    """The file to parse instead of ``path`` (itself when it has no old key), the old keys found, and the
    ``data.sources`` it sets in today's form (``_UNSET`` when none). Its old source keys are merged into
    ``legacy``."""
    import tempfile
    from pathlib import Path

    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return path, [], _UNSET  # the parser reports a missing or broken file itself
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return path, [], _UNSET
    sources = data.get("sources", _UNSET)
    found = [key for key in data if key in LEGACY_KEYS]
    if not found:
        return path, [], sources
    legacy.update({key: data[key] for key in SOURCE_KEYS if key in data})
    new_data, _ = rewrite_data_section({key: value for key, value in data.items() if key not in SOURCE_KEYS})
    copy = Path(tempfile.mkdtemp(prefix="rode_config_")) / Path(path).name
    copy.write_text(yaml.safe_dump({**config, "data": new_data}, sort_keys=False), encoding="utf-8")
    return str(copy), found, sources


def _flow(sources: list[dict] | None) -> str:
    """``data.sources`` as one line of YAML flow style, for a flag and a warning."""
    import yaml

    return "null" if sources is None else yaml.safe_dump(sources, default_flow_style=True, sort_keys=False, width=10**6).strip()
