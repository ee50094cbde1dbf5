"""Configs written before ``data.sources``: their data keys rewritten to today's form, with a warning showing it.

Until issue 28 the data module took a root per dataset (``data.unifood_root``, ...), a ``data.datasets`` filter,
``data.huggingface`` blocks, ``data.sampling_weights``, ``data.val_fraction``, the demo's sizes
(``data.demo_train_size``, ...) and flat task, cluster and predict keys. A config (or a run's saved
``config.yaml``) with those keys still runs: the command line, the estimate's parser and the grid runner rewrite
them here before parsing, and the warning shows what to write instead. The rewriting is pure (mappings in,
mappings out), so that a test can check every file of ``configs/`` gives the same configuration in both spellings.
"""

from __future__ import annotations

import os
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
    config), whose entries old roots replace or join and an old ``data.datasets`` filters. ``None`` when they meant
    the default demo."""
    roots = _configured(legacy)
    configured_base = [dict(entry) for entry in base or [] if entry.get("root") is not None]
    sources = _merged(configured_base, roots) if configured_base else roots
    demo = not sources
    if demo and base:
        sources = [dict(entry) for entry in base]
    names = legacy.get("datasets")
    if demo and not sources:
        sources = [{"dataset": name} for name in (names or _DEFAULT_DEMO)]
    if names is not None:
        sources = _filtered(sources, names, demo)
    _apply_settings(sources, legacy)
    if all(set(entry) == {"dataset"} for entry in sources) and [e["dataset"] for e in sources] == list(_DEFAULT_DEMO):
        return None  # exactly the default demo: say so by leaving data.sources unset
    return sources


def _merged(base: list[dict], roots: list[dict]) -> list[dict]:
    """Old roots over a configured list: a source of the same served name gets the new root, others are added."""
    merged = {entry.get("name", entry["dataset"]): entry for entry in base}
    for entry in roots:
        name = entry.get("name", entry["dataset"])
        merged[name] = {**merged.get(name, {}), **entry}
    return list(merged.values())


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
    served = {entry.get("name", entry["dataset"]) for entry in sources}
    unknown = [key for key in weights if key.partition("/")[0] not in served]
    if unknown:
        raise UserError(f"data.sampling_weights: unknown key {unknown[0]!r}; expected a served dataset "
                        f"({', '.join(sorted(served))}) or '<dataset>/<task>'")
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
    """A command line (``--config`` / ``-c`` files, a ``--data`` file, ``--data.<key>`` flags) with every old data
    key in today's form, and one warning per place that had some. Files with old keys are read through a rewritten
    copy in a temporary folder; the old source keys of all files and flags merge in order (a later one wins, as the
    parser merges them) into one ``--data.sources`` placed after the last of them, unless a ``data.sources`` of
    today's form comes later and replaces them. ``config_files=False`` (a grid's arguments, whose config files are
    added per run) renames the flat keys only and leaves files and old source keys to the command line, which
    rewrites them with the configs when each run starts."""
    state = _Rewriting()
    index = 0
    while index < len(args):
        flag, value, width = _split_flag(args, index)
        if flag in ("--config", "-c") and value is not None and config_files:
            state.config_file(flag, value)
        elif flag == "--data" and value is not None and config_files and value.endswith((".yaml", ".yml")):
            state.data_file(value)
        elif flag is not None and flag.startswith("--data.") and flag[7:] in LEGACY_KEYS and value is not None:
            state.old_flag(flag[7:], value, sources=config_files)
        else:
            if flag == "--data.sources" and value is not None:
                sources = _yaml_value(flag, value)
                state.new_sources(sources)
                if isinstance(sources, list):
                    state.sets_sources.append((len(state.rewritten), None))
            state.rewritten.append(args[index:index + width])
        index += width
    return state.finish()


class _Rewriting:
    """The state of one pass over a command line (see :func:`rewrite_arguments`)."""

    def __init__(self):
        self.rewritten: list[list[str]] = []  # one group per flag and its value
        self.warnings: list[str] = []
        # Where a list of sources is set (group, file or None for a flag): jsonargparse merges two lists of one
        # length entry by entry (a later demo source would keep an earlier root), so only the last list may stay.
        self.sets_sources: list[tuple[int, str | None]] = []
        self.legacy: dict[str, Any] = {}
        self.base: list[dict] | None = None  # the last data.sources set in today's form
        self.insert_at: int | None = None
        self.base_then: list[dict] | None = None

    def new_sources(self, sources: Any) -> None:
        """A ``data.sources`` of today's form replaces every source key before it, old or new."""
        self.base, self.legacy, self.insert_at = sources, {}, None

    def _legacy_seen(self, keys: dict[str, Any]) -> None:
        self.legacy.update(keys)
        self.insert_at, self.base_then = len(self.rewritten), self.base  # after the group that had them

    def config_file(self, flag: str, path: str) -> None:
        copy, found, legacy, sources = _rewrite_file(path, section="data")
        if sources is not _UNSET:
            self.new_sources(sources)
            if isinstance(sources, list):
                self.sets_sources.append((len(self.rewritten), copy))
        self.rewritten.append([flag, copy])
        if found:
            self.warnings.append(f"{flag} {path}: " + ", ".join(f"data.{key}" for key in found))
        if legacy:
            self._legacy_seen(legacy)

    def data_file(self, path: str) -> None:
        copy, found, legacy, sources = _rewrite_file(path, section=None)
        if sources is not _UNSET:
            self.new_sources(sources)
            if isinstance(sources, list):
                self.sets_sources.append((len(self.rewritten), copy))
        self.rewritten.append(["--data", copy])
        if found:
            self.warnings.append(f"--data {path}: " + ", ".join(f"data.{key}" for key in found))
        if legacy:
            self._legacy_seen(legacy)

    def old_flag(self, key: str, value: str, sources: bool) -> None:
        if key in RENAMED:
            group, field = RENAMED[key]
            self.rewritten.append([f"--data.{group}.{field}", value])
        elif key in SOURCE_KEYS and not sources:
            self.rewritten.append([f"--data.{key}", value])  # for the command line, with the run's configs
            return
        elif key in SOURCE_KEYS:
            self._legacy_seen({key: _yaml_value(f"--data.{key}", value)})
        self.warnings.append(f"--data.{key}")

    def finish(self) -> tuple[list[str], list[str]]:
        if self.legacy:
            sources = sources_from_legacy(self.legacy, self.base_then)
            self.rewritten.insert(self.insert_at, [f"--data.sources={_flow(sources)}"])
            self.sets_sources = [(group + (group >= self.insert_at), file) for group, file in self.sets_sources]
            if sources is not None:
                self.sets_sources.append((self.insert_at, None))
            self.warnings.append(f"read as data.sources: {_flow(sources)}")
        self._keep_the_last_sources()
        return [argument for group in self.rewritten for argument in group], self.warnings

    def _keep_the_last_sources(self) -> None:
        """Every data.sources but the last dropped (it replaces them), so that the parser cannot merge them."""
        if len(self.sets_sources) < 2:
            return
        last = max(group for group, _ in self.sets_sources)
        for group, file in self.sets_sources:
            if group == last:
                continue
            if file is None:
                self.rewritten[group] = []
            else:
                self.rewritten[group] = [self.rewritten[group][0], _without_sources(file)]


_UNSET = object()


def _yaml_value(flag: str, value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise UserError(f"{flag} {value}: not a YAML value ({getattr(error, 'problem', None) or error})") from None


def _split_flag(args: list[str], index: int) -> tuple[str | None, str | None, int]:
    """``(flag, value, how many arguments they take)`` at ``index``: ``--key value`` or ``--key=value``; an
    argument that is itself a flag is no value (``--print_config --config x.yaml``)."""
    argument = args[index]
    if not argument.startswith("-"):
        return None, None, 1
    if "=" in argument:
        flag, value = argument.split("=", 1)
        return flag, value, 1
    value = args[index + 1] if index + 1 < len(args) else None
    if value is None or value.startswith("--") or value == "-c":
        return argument, None, 1
    return argument, value, 2


def _rewrite_file(path: str, section: str | None) -> tuple[str, list[str], dict[str, Any], Any]:
    """``(the file to parse instead, the old keys found, its old source keys, the data.sources it sets in today's
    form or _UNSET)``. ``section``: the data keys are under that key (a whole config), or at the top (a
    ``--data`` file). A file without old keys is parsed as it is."""
    from pathlib import Path

    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return path, [], {}, _UNSET  # the parser reports a missing or broken file itself
    data = (config.get(section) if isinstance(config, dict) else None) if section else config
    if not isinstance(data, dict):
        return path, [], {}, _UNSET
    sources = data.get("sources", _UNSET)
    found = [key for key in data if key in LEGACY_KEYS]
    if not found:
        return path, [], {}, sources
    new_data, _ = rewrite_data_section({key: value for key, value in data.items() if key not in SOURCE_KEYS})
    rewritten = {**config, section: new_data} if section else new_data
    return config_copy(path, rewritten), found, {key: data[key] for key in SOURCE_KEYS if key in data}, sources


def _without_sources(path: str) -> str:
    """A copy of the config file ``path`` without its ``data.sources`` (a later one replaces it)."""
    from pathlib import Path

    import yaml

    config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    data = config.get("data") if isinstance(config, dict) and "data" in config else config
    data = {key: value for key, value in data.items() if key != "sources"}
    return config_copy(path, {**config, "data": data} if isinstance(config, dict) and "data" in config else data)


def config_copy(path: str, content: dict) -> str:
    """A rewritten config file (``content``, named as ``path``), in a folder of the temporary directory named by its
    content: the same file is written once, not once per run (also used by ``export.py`` for a run's saved config
    without fit's own keys)."""
    import hashlib
    import tempfile
    from pathlib import Path

    import yaml

    text = yaml.safe_dump(content, sort_keys=False)
    folder = Path(tempfile.gettempdir()) / "rode_lightning_configs" / hashlib.sha256(text.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / Path(path).name
    if not copy.is_file() or copy.read_text(encoding="utf-8") != text:
        temporary = copy.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(copy)  # whole or absent, also when DDP processes write it at once
    return str(copy)


def _flow(sources: list[dict] | None) -> str:
    """``data.sources`` as one line of YAML flow style, for a flag and a warning."""
    import yaml

    return "null" if sources is None else yaml.safe_dump(sources, default_flow_style=True, sort_keys=False,
                                                         width=10**6).strip()
