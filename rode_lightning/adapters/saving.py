"""Adapter-only checkpoints: the trained tensors as safetensors, with the adapter configuration beside them.

A full 7B checkpoint is ~13 GB while the adapters are a few MB, and the frozen weights are already on the user's
disk. An adapter directory holds::

    adapter.safetensors   experts, routers, cluster embedding, and the projector when it was trained
    adapter_config.json   the AdapterConfig and the base it was trained on (format version 2)

The base record (``AdaptedModel.base_record``: which base, model type, architecture, the text model's shape, a hash of
a transformers ``config.json``) lets loading refuse an adapter trained on another base, naming both, instead of
loading tensors that happen to fit. Adapters saved before it (format version 1) were all trained on the LLaVA-1.5
base and still load there.

Loading checks the configuration and every tensor's name and shape against the freshly built model and names
whatever differs, instead of failing inside ``load_state_dict`` or, worse, loading into the wrong layers.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.atomic import replaced_atomically, write_text_atomically
from rode_lightning.dtensors import whole_tensor
from rode_lightning.messages import first_names
from rode_lightning.user_errors import MissingFileError, UserError

WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor of ``model`` (adapters, cluster embedding, projector if trained), by name, whole.

    Under FSDP2 parameters are DTensors. ``rode_lightning.scale.sharding`` replicates every trainable one, so each
    rank reads its local copy, with no communication (the end of ``fit`` saves on rank 0 alone). A tensor sharded
    across ranks is gathered instead: a collective, which every rank must then join.
    """
    return {name: whole_tensor(parameter.detach()) for name, parameter in model.named_parameters()
            if parameter.requires_grad}


def save_adapter(model: nn.Module, config: AdapterConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous().cpu() for name, tensor in adapter_state_dict(model).items()}
    # Each file complete or absent (rode_lightning/atomic.py): an interrupted save keeps the previous adapter.
    with replaced_atomically(directory / WEIGHTS_NAME) as partial:
        save_file(state, partial)
    record = {"format_version": FORMAT_VERSION, "adapter": asdict(config)}
    if hasattr(model, "base_record"):
        record["base"] = model.base_record()
    write_text_atomically(directory / CONFIG_NAME, json.dumps(record, indent=2))
    return directory


FORMAT_VERSION = 2
LLAVA_BASE = "llava"
_IDENTITY_KEYS = ("base", "model_type", "architecture", "text")


def check_base(directory: Path, saved: dict | None, current: dict) -> None:
    """Refuse an adapter trained on another base (``saved``: its record, None for format version 1, which only the
    LLaVA-1.5 base wrote); a base of the same shape with another ``config.json`` only warns."""
    saved = saved if saved is not None else {"base": LLAVA_BASE}
    differing = [key for key in _IDENTITY_KEYS if key in saved and saved[key] != current.get(key)]
    if differing:
        raise UserError(f"adapter checkpoint {directory} was trained on another base: {_describe(saved)}; this "
                        f"model is {_describe(current)}")
    if saved.get("config_sha256") and saved["config_sha256"] != current.get("config_sha256"):
        warnings.warn(f"adapter checkpoint {directory} was trained on a {_describe(saved)} whose config.json "
                      "differs from this one's (same architecture and shape): its adapters load, but were not "
                      "trained on these weights", UserWarning, stacklevel=3)


def _describe(record: dict) -> str:
    text = record.get("text") or {}
    shape = f", hidden {text['hidden_size']}, {text['layers']} layers" if text else ""
    if record.get("base") == LLAVA_BASE:
        return f"the LLaVA-1.5 base (model.base: llava{shape})"
    return f"{record.get('architecture')} ({record.get('model_type')}{shape})"


def saved_cluster_embedding_shape(directory: str | Path) -> tuple[int, ...] | None:
    """The shape of MoCLE's cluster embedding in an adapter directory (its width is the instruction encoder's), read
    from the safetensors header; None when the file has none or does not exist (``load_adapter`` says so)."""
    from safetensors import safe_open

    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        return None
    try:
        with safe_open(str(weights), framework="pt") as file:
            if "cluster_embedding" not in file.keys():
                return None
            return tuple(file.get_slice("cluster_embedding").get_shape())
    except SafetensorError:
        return None  # a truncated file: load_adapter names it


def load_adapter(model: nn.Module, config: AdapterConfig, directory: str | Path) -> None:
    """Load an adapter directory into ``model`` (built with ``config``); refuse anything that does not fit."""
    directory = Path(directory)
    weights, config_file = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    for path in (weights, config_file):
        if not path.is_file():
            raise MissingFileError(f"adapter checkpoint: {path} does not exist")
    # The settings that change which tensors exist or what they mean, as the method declares them; the others
    # (dropout, coefficients) may differ.
    structural_keys = config.adapter_method.structural_keys
    try:
        saved_file = json.loads(config_file.read_text())
        saved = saved_file["adapter"]
        if not set(structural_keys) <= set(saved):
            raise KeyError("structural keys")
    except (ValueError, KeyError, TypeError):  # malformed JSON or not UTF-8 text (both ValueErrors), or no config
        raise UserError(f"adapter checkpoint: {config_file} is not an adapter config (truncated or written by "
                        f"something else); save the adapter again") from None
    if hasattr(model, "base_record"):
        check_base(directory, saved_file.get("base"), model.base_record())
    current = asdict(config)
    differences = [f"{key}: checkpoint {saved.get(key)!r}, model {current[key]!r}"
                   for key in structural_keys if saved.get(key) != current[key]]
    if differences:
        raise UserError(f"adapter checkpoint {directory} does not fit the configured adapter: "
                        + "; ".join(differences))
    try:
        state = load_file(weights)
    except SafetensorError as error:
        raise UserError(f"adapter checkpoint: {weights} is truncated or corrupt ({error}); save the adapter "
                        f"again, or point model.adapter_path at a complete one") from None
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"adapter checkpoint {weights} does not fit the model: "
                        f"missing tensors {first_names(missing)}; unexpected tensors {first_names(unexpected)}")
    mismatched = [f"{name}: checkpoint {tuple(state[name].shape)}, model {tuple(tensor.shape)}"
                  for name, tensor in expected.items() if state[name].shape != tensor.shape]
    if mismatched:
        raise UserError(f"adapter checkpoint {weights}: shapes differ for " + "; ".join(mismatched[:5]))
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor.to(parameters[name].dtype))
