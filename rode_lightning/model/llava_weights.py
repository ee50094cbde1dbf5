"""Reading the LLaVA checkpoints users have (``model.language.path``): two LLaVA layouts and a plain LLaMA.

Nothing here downloads: every path is a local file or directory.

**LLaVA directories** (``model.language.path``). :func:`inspect_llava_directory` reads ``config.json`` and finds the
weight files; :func:`load_llava_weights` renames the tensors and loads them into a ``LlamaForCausalLM`` built from
the text config (by ``model/language.py``), and returns the projector's tensors for our ``MLPProjector``.

* ``llava``, the original LLaVA v1/v1.5 repo: ``config.json`` with ``model_type`` ``llava`` or ``llava_llama``, the
  LLaMA fields at the top level and ``mm_hidden_size`` (the vision width, 1024 for CLIP ViT-L). Tensors ``model.*``
  and ``lm_head.*`` keep their names; ``model.mm_projector.{0,2}.*`` become the projector's ``layers.{0,2}.*``;
  ``model.vision_tower.*`` is ignored.
* ``llava-hf``, transformers' ``LlavaForConditionalGeneration``: ``model_type`` ``llava`` with a ``text_config``
  (llama) and a ``vision_config`` (its ``hidden_size`` is the vision width). ``language_model.model.*`` (before
  transformers 4.52) or ``model.language_model.*`` become ``model.*``; ``language_model.lm_head.*`` or ``lm_head.*``
  become ``lm_head.*``; ``[model.]multi_modal_projector.linear_{1,2}.*`` become ``layers.{0,2}.*``;
  ``[model.]vision_tower.*`` is ignored.
* ``llama``, a plain transformers LLaMA (``model_type`` ``llama``): ``model.*``, ``lm_head.*``; no projector, so ours
  starts random and must be trained (``model.train_projector: true``).

Tensors named ``*.rotary_emb.inv_freq`` (saved by transformers 4.31, e.g. in LLaVA v1.5) are recomputed, not loaded.
Weight files: ``model.safetensors.index.json`` with its shards, ``model.safetensors``, ``model-*-of-*.safetensors``,
then the same for ``pytorch_model*.bin``; safetensors win when both are present. Shards are read one at a time
(safetensors one tensor at a time), each tensor converted to the configured dtype and put in place of the model's
empty (meta) tensor, so peak memory is the model in its dtype plus one tensor (one ``.bin`` shard, memory-mapped).

Every problem is an error naming the file and the tensor: missing path, no ``config.json``, unknown layout, a shape
that does not fit (expected vs found), missing or unexpected tensors.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rode_lightning.compat import put_tensor
from rode_lightning.model.weight_files import check_shape, first_tensor_names, unreadable_as_error
from rode_lightning.progress import progress
from rode_lightning.user_errors import MissingFileError, UserError

LLAVA, LLAVA_HF, LLAMA = "llava", "llava-hf", "llama"
LAYOUTS = (LLAVA, LLAVA_HF, LLAMA)

LANGUAGE, PROJECTOR = "language", "projector"
PROJECTOR_KEYS = ("layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias")

# config.json keys that describe the file or the multimodal wrapper, not the LLaMA inside it.
_NOT_LLAMA_KEYS = {"model_type", "architectures", "_name_or_path", "torch_dtype", "dtype", "transformers_version",
                   "auto_map"}

_SAFETENSORS_INDEX, _BIN_INDEX = "model.safetensors.index.json", "pytorch_model.bin.index.json"



@dataclass
class LlavaDirectory:
    """What :func:`inspect_llava_directory` found in a directory, before any weight is read.

    Attributes:
        path: the directory.
        layout: ``llava`` (original LLaVA repo), ``llava-hf`` (transformers) or ``llama`` (plain LLaMA).
        text_config: the LLaMA fields of ``config.json`` (``text_config`` for llava-hf), for ``LlamaConfig(**...)``.
        projector_input_dim: the vision width the projector expects (``mm_hidden_size``; llava-hf:
            ``vision_config.hidden_size``), ``None`` when unknown or without projector.
        weight_files: the files to read, in order.
        index: tensor name -> file name from the shard index, when there is one.
    """

    path: Path
    layout: str
    text_config: dict
    projector_input_dim: int | None
    weight_files: list[Path]
    index: dict[str, str] | None = None

    @property
    def has_projector(self) -> bool:
        return self.layout in (LLAVA, LLAVA_HF)

    def describe(self) -> str:
        return f"{self.path} ({self.layout} layout)"


@dataclass
class ProjectorWeights:
    """The projector tensors of a LLaVA checkpoint, renamed for :class:`~rode_lightning.model.projector.MLPProjector`
    (``layers.0.*``: vision width -> hidden size, ``layers.2.*``: hidden size -> hidden size)."""

    state: dict[str, torch.Tensor]
    source: str
    files: dict[str, Path] = field(default_factory=dict)  # our name -> the file it came from

    @property
    def input_dim(self) -> int:
        return self.state["layers.0.weight"].shape[1]

    @property
    def output_dim(self) -> int:
        return self.state["layers.2.weight"].shape[0]

    def load_into(self, projector: nn.Module, vision_width: int | None = None) -> None:
        """Copy into ``projector`` (its dtype is kept). A ``vision_width`` other than the projector's input width is
        an error naming both; any other shape that does not fit names file and tensor."""
        if vision_width is not None and vision_width != self.input_dim:
            raise UserError(f"model.vision width {vision_width} does not match the projector input width "
                            f"{self.input_dim} (mm_hidden_size) of {self.source}; use the vision tower the checkpoint "
                            "was trained with (LLaVA-1.5: preset ViT-L-14-336, width 1024)")
        own = projector.state_dict()
        for name, tensor in self.state.items():
            check_shape(own[name].shape, tensor.shape, self.files.get(name, self.source), name,
                         "the projector built for this vision tower and language model")
        with torch.no_grad():
            for name, tensor in self.state.items():
                own[name].copy_(tensor)


# --------------------------------------------------------------------------------------------------- LLaVA


def inspect_llava_directory(path: str | Path) -> LlavaDirectory:
    """Read ``config.json``, tell the layout and list the weight files; reads no weights."""
    directory = Path(path).expanduser()
    if not directory.exists():
        raise MissingFileError(f"model.language.path: {directory} does not exist")
    if not directory.is_dir():
        raise MissingFileError(f"model.language.path: {directory} is not a directory (give the directory that "
                               "holds config.json and the weight files)")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise MissingFileError(f"model.language.path: {directory} has no config.json; a LLaVA (original or llava-hf) "
                               "or LLaMA directory is expected")
    try:
        raw = json.loads(config_file.read_text())
    except ValueError as error:  # malformed JSON, or not UTF-8 text: the user's file, not a bug
        raise UserError(f"model.language.path: {config_file} is not valid JSON ({error})") from None
    model_type = raw.get("model_type")
    if model_type in ("llava", "llava_llama") and isinstance(raw.get("text_config"), dict):
        layout, text = LLAVA_HF, dict(raw["text_config"])
        text_type = text.get("model_type", "llama")
        if text_type != "llama":
            raise UserError(f"{config_file}: text_config.model_type is {text_type!r}; only LLaMA language models "
                            "are supported")
        projector_input = (raw.get("vision_config") or {}).get("hidden_size")  # absent: the tensor's width decides
        activation = raw.get("projector_hidden_act", "gelu")
        if activation != "gelu":
            raise UserError(f"{config_file}: projector_hidden_act is {activation!r}; MLPProjector uses GELU")
        _warn_feature_layer(config_file, raw.get("vision_feature_layer", -2),
                            raw.get("vision_feature_select_strategy", "default") == "default")
    elif model_type in ("llava", "llava_llama"):
        layout, text = LLAVA, dict(raw)
        projector_type = raw.get("mm_projector_type", "mlp2x_gelu")
        if projector_type != "mlp2x_gelu":
            raise UserError(f"{config_file}: mm_projector_type is {projector_type!r}; MLPProjector is LLaVA-1.5's "
                            "'mlp2x_gelu' (Linear, GELU, Linear)")
        projector_input = raw.get("mm_hidden_size")
        _warn_feature_layer(config_file, raw.get("mm_vision_select_layer", -2),
                            raw.get("mm_vision_select_feature", "patch") == "patch")
    elif model_type == "llama":
        layout, text, projector_input = LLAMA, dict(raw), None
    else:
        raise UserError(f"{config_file}: unknown layout (model_type {model_type!r}); expected 'llava' or "
                        "'llava_llama' (original LLaVA v1/v1.5 repo, or llava-hf with a text_config) or 'llama'")
    if "quantization_config" in text:
        raise UserError(f"{config_file}: quantized checkpoints are not supported")
    text = {key: value for key, value in text.items() if key not in _NOT_LLAMA_KEYS}
    vocab = text.get("vocab_size", 32000)
    if not (isinstance(text.get("pad_token_id"), int) and 0 <= text["pad_token_id"] < vocab):
        text["pad_token_id"] = None  # LLaVA v1.5 says -1: no padding row (padding is masked anyway)
    files, index = _weight_files(directory)
    return LlavaDirectory(directory, layout, text, projector_input, files, index)


def target_name(layout: str, name: str) -> tuple[str, str] | None:
    """Where a checkpoint tensor goes: ``("language", name in LlamaForCausalLM)``, ``("projector", name in
    MLPProjector)``, or ``None`` for tensors we do not use (vision tower, saved RoPE frequencies). Any other name is
    passed to the language model unchanged, where it shows up as unexpected."""
    if name.endswith("rotary_emb.inv_freq"):
        return None
    if layout == LLAVA:
        if name.startswith("model.vision_tower."):
            return None
        match = re.fullmatch(r"model\.mm_projector\.(\d+)\.(weight|bias)", name)
        if match:
            return PROJECTOR, f"layers.{match[1]}.{match[2]}"
        return LANGUAGE, name
    if layout == LLAVA_HF:
        if re.match(r"(model\.)?vision_tower\.", name):
            return None
        match = re.fullmatch(r"(?:model\.)?multi_modal_projector\.linear_([12])\.(weight|bias)", name)
        if match:
            return PROJECTOR, f"layers.{0 if match[1] == '1' else 2}.{match[2]}"
        for old, new in (("language_model.model.", "model."), ("model.language_model.", "model."),
                         ("language_model.lm_head.", "lm_head.")):
            if name.startswith(old):
                return LANGUAGE, new + name[len(old):]
        return LANGUAGE, name
    return LANGUAGE, name


def load_llava_weights(directory: LlavaDirectory, model: nn.Module,
                       dtype: torch.dtype = torch.float32) -> ProjectorWeights | None:
    """Load the LLaMA tensors of ``directory`` into ``model`` (a ``LlamaForCausalLM`` of its text config, typically
    built on the meta device) in ``dtype``; return the projector tensors (fp32) or ``None`` for the ``llama`` layout.

    Names are checked before any tensor is read when the index or the safetensors headers list them; shapes are
    checked tensor by tensor. Each tensor replaces the model's own (``requires_grad`` is kept)."""
    expected = _expected_language_names(model)
    listed = _listed_names(directory)
    if listed is not None:
        _check_names(directory, expected, listed)
    own_shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    loaded: set[str] = set()
    unexpected: list[tuple[str, Path]] = []
    projector: dict[str, torch.Tensor] = {}
    projector_files: dict[str, Path] = {}
    hidden = model.config.hidden_size
    projector_shapes = _projector_shapes(directory.projector_input_dim, hidden)
    tensors = progress(_read_tensors(directory), f"loading {directory.path.name}", "tensor",
                       total=None if listed is None else len(listed))
    for file, name, tensor in tensors:
        target = target_name(directory.layout, name)
        if target is None:
            continue
        kind, ours = target
        if kind == PROJECTOR:
            wanted = projector_shapes.get(ours)
            if wanted is None:
                unexpected.append((name, file))
                continue
            check_shape(wanted, tensor.shape, file, name, "the projector (hidden_size of the text config"
                         + (f", mm_hidden_size {directory.projector_input_dim})" if directory.projector_input_dim
                            else ")"))
            projector[ours], projector_files[ours] = tensor.detach().to(torch.float32).clone(), file
            continue
        if ours not in own_shapes:
            unexpected.append((name, file))
            continue
        check_shape(own_shapes[ours], tensor.shape, file, name, "the LLaMA built from config.json")
        # Always a copy: safetensors and memory-mapped .bin tensors share pages with the file.
        _put(model, ours, tensor.to(dtype if tensor.is_floating_point() else tensor.dtype, copy=True))
        loaded.add(ours)
    if unexpected:
        raise UserError(f"{directory.describe()}: tensors this model does not have: "
                        + first_tensor_names([f"{name} (in {file.name})" for name, file in unexpected]))
    tied = _tie_if_configured(model)
    missing = sorted(expected - loaded - tied)
    if missing:
        raise UserError(f"{directory.describe()}: missing tensors (named as in LlamaForCausalLM): {first_tensor_names(missing)}")
    if not directory.has_projector:
        return None
    missing_projector = [key for key in PROJECTOR_KEYS if key not in projector]
    if missing_projector:
        raise UserError(f"{directory.describe()}: missing projector tensors: "
                        + first_tensor_names([_checkpoint_projector_name(directory.layout, key) for key in missing_projector]))
    return ProjectorWeights(projector, directory.describe(), projector_files)


def _warn_feature_layer(config_file: Path, layer, patches_only: bool) -> None:
    if layer != -2 or not patches_only:
        warnings.warn(f"{config_file}: the projector was trained on vision features of layer {layer} "
                      f"({'patches only' if patches_only else 'with the CLS token'}); the vision encoder gives the "
                      "patch tokens of the penultimate block (-2), as LLaVA-1.5 does", stacklevel=3)


def _weight_files(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    for index_name, single, pattern in ((_SAFETENSORS_INDEX, "model.safetensors", "model-*-of-*.safetensors"),
                                        (_BIN_INDEX, "pytorch_model.bin", "pytorch_model-*-of-*.bin")):
        index_file = directory / index_name
        if index_file.is_file():
            try:
                weight_map = json.loads(index_file.read_text()).get("weight_map")
            except (ValueError, AttributeError) as error:  # malformed JSON, or JSON that is not an object
                raise UserError(f"model.language.path: {index_file} is not a weight index ({error})") from None
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{index_file}: no 'weight_map'")
            names = list(dict.fromkeys(weight_map.values()))
            absent = [name for name in names if not (directory / name).is_file()]
            if absent:
                raise MissingFileError(f"{index_file} names shard files that are not in {directory}: {first_tensor_names(absent)}")
            return [directory / name for name in names], weight_map
        if (directory / single).is_file():
            return [directory / single], None
        shards = sorted(directory.glob(pattern))
        if shards:
            return shards, None
    raise MissingFileError(f"{directory}: no weights found (looked for {_SAFETENSORS_INDEX}, model.safetensors, "
                           f"model-*-of-*.safetensors, {_BIN_INDEX}, pytorch_model.bin, pytorch_model-*-of-*.bin)")


def _expected_language_names(model: nn.Module) -> set[str]:
    return set(model.state_dict())  # persistent tensors only: RoPE's inv_freq is not among them


def _listed_names(directory: LlavaDirectory) -> dict[str, Path] | None:
    """Every tensor name with its file, without reading tensors: from the index or safetensors headers."""
    if directory.index is not None:
        return {name: directory.path / file for name, file in directory.index.items()}
    if all(file.suffix == ".safetensors" for file in directory.weight_files):
        from safetensors import safe_open

        listed = {}
        for file in directory.weight_files:
            with unreadable_as_error(file, "model.language.path"), safe_open(str(file), framework="pt") as handle:
                listed.update({name: file for name in handle.keys()})
        return listed
    return None


def _check_names(directory: LlavaDirectory, expected: set[str], listed: dict[str, Path]) -> None:
    found, projector, unexpected = set(), set(), []
    for name, file in listed.items():
        target = target_name(directory.layout, name)
        if target is None:
            continue
        kind, ours = target
        if kind == PROJECTOR and ours in PROJECTOR_KEYS:
            projector.add(ours)
        elif kind == LANGUAGE and ours in expected:
            found.add(ours)
        else:
            unexpected.append(f"{name} (in {file.name})")
    if unexpected:
        raise UserError(f"{directory.describe()}: tensors this model does not have: {first_tensor_names(unexpected)}")
    optional = {"lm_head.weight"} if directory.text_config.get("tie_word_embeddings") else set()
    missing = sorted(expected - found - optional)
    if missing:
        raise UserError(f"{directory.describe()}: missing tensors (named as in LlamaForCausalLM): {first_tensor_names(missing)}")
    if directory.has_projector:
        missing = [_checkpoint_projector_name(directory.layout, key) for key in PROJECTOR_KEYS if key not in projector]
        if missing:
            raise UserError(f"{directory.describe()}: missing projector tensors: {first_tensor_names(missing)}")


def _projector_shapes(input_dim: int | None, hidden: int) -> dict[str, tuple[int, ...]]:
    first = (hidden, input_dim) if input_dim else None
    shapes = {"layers.0.bias": (hidden,), "layers.2.weight": (hidden, hidden), "layers.2.bias": (hidden,)}
    if first is not None:
        shapes["layers.0.weight"] = first
    else:  # input width unknown from config.json: any width, the tensor decides
        shapes["layers.0.weight"] = (hidden, -1)
    return shapes


def _checkpoint_projector_name(layout: str, key: str) -> str:
    index, kind = key.split(".")[1:]
    if layout == LLAVA:
        return f"model.mm_projector.{index}.{kind}"
    return f"multi_modal_projector.linear_{1 if index == '0' else 2}.{kind}"


def _read_tensors(directory: LlavaDirectory) -> Iterator[tuple[Path, str, torch.Tensor]]:
    """``(file, name, tensor)``, one file at a time; safetensors one tensor at a time."""
    for file in directory.weight_files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with (unreadable_as_error(file, "model.language.path"),
                  safe_open(str(file), framework="pt", device="cpu") as handle):
                for name in handle.keys():
                    yield file, name, handle.get_tensor(name)
        else:
            with unreadable_as_error(file, "model.language.path"):
                state = _torch_load(file)
            for name in list(state):
                yield file, name, state.pop(name)
            del state


def _torch_load(file: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:  # legacy (non-zip) serialisation cannot be memory-mapped
        if "mmap" not in str(error):
            raise
        return torch.load(file, map_location="cpu", weights_only=True)


def _put(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    put_tensor(model.get_submodule(module_name), leaf, tensor)


def _tie_if_configured(model: nn.Module) -> set[str]:
    """Tie ``lm_head`` to the input embedding when the config says so; returns the names that need no tensor."""
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return set()
    model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return {"lm_head.weight"}
