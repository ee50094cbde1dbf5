"""Any transformers image-text-to-text model as the base (``model.base: transformers``): Qwen2/2.5/3-VL, llava-hf,
LLaVA-OneVision, Idefics3, SmolVLM, Gemma 3, InternVL, ...

The model is loaded from a local directory with ``AutoModelForImageTextToText`` and spelled by its own
``AutoProcessor`` (``model/formats/chat_template.py``): its chat template, its image tokens, its pixel inputs. The
model's own forward does everything the architecture needs (Qwen's multimodal rotary positions, image features
written over image tokens, tiles); this class only freezes it, puts the adapters into its language model, feeds it
batches and makes ``generate`` greedy and stop at the end of a turn.

Where a family keeps its parts is read through transformers' own accessors (``get_decoder()``,
``get_encoder(modality="image")``) and the model's ``_no_split_modules`` (the block classes it declares for
sharding), so a family not listed in README.md works when it follows transformers' conventions.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.inject import adapter_parameters
from rode_lightning.batch import FoodBatch
from rode_lightning.model.adapted import AdaptedModel, sampling
from rode_lightning.model.dtypes import DTYPES, DtypeName, check_dtype
from rode_lightning.model.formats.chat_template import processor_image_token_id
from rode_lightning.model.quantization import (QuantizationConfig, check_runs_here, has_quantized_weights,
                                               transformers_quantization_config)
from rode_lightning.user_errors import MissingFileError, UserError

log = logging.getLogger(__name__)

# Where the families keep the connector between the vision tower and the language model, under ``model.model``:
# llava-hf, LLaVA-OneVision, Gemma 3, InternVL: multi_modal_projector; Idefics3 / SmolVLM: connector; Qwen2/2.5/3-VL:
# the merger inside the vision tower (and Qwen3-VL's deepstack mergers).
CONNECTOR_NAMES = ("multi_modal_projector", "connector", "visual.merger", "visual.deepstack_merger_list")
# Per-token inputs some forwards take, derived from the ids (1 on image tokens): Qwen's mm_token_type_ids, Gemma 3's
# token_type_ids. The processor computes them for the ids it made; the prompt and the whole conversation differ.
TOKEN_TYPE_INPUTS = ("mm_token_type_ids", "token_type_ids")


@dataclass
class TransformersConfig:
    """A transformers vision-language model in a local directory (``model.base: transformers``).

    Args:
        path: the directory (``config.json``, weights, the processor's files with a chat template), e.g. a
            downloaded ``Qwen/Qwen2.5-VL-7B-Instruct``. Nothing is downloaded.
        dtype: ``fp32``, ``bf16`` or ``fp16``: the frozen model's dtype (adapters train in fp32).
        min_pixels: Qwen-VL processors: the smallest image area after resizing (more pixels, more image tokens);
            ``null`` keeps the processor's own setting.
        max_pixels: Qwen-VL processors: the largest image area; ``null`` keeps the processor's own.
        end_of_turn: the token that closes an assistant turn (Qwen ``<|im_end|>``, Gemma ``<end_of_turn>``,
            Idefics3 ``<end_of_utterance>``); labels end with it and generation stops at it. ``null``: the
            tokenizer's eos token.
        attn_implementation: transformers' attention (``sdpa``, ``eager``, ``flash_attention_2``); ``null`` for its
            default.
    """

    path: str | None = None
    dtype: DtypeName = "bf16"
    min_pixels: int | None = None
    max_pixels: int | None = None
    end_of_turn: str | None = None
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        check_dtype("model.transformers.dtype", self.dtype)
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"model.transformers.{name}: {value}; expected a positive number of pixels")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise UserError(f"model.transformers: min_pixels {self.min_pixels} is above max_pixels {self.max_pixels}")

    def directory(self) -> Path:
        if self.path is None:
            raise UserError("model.transformers.path: not set; model.base: transformers loads a model from a local "
                            "directory (config.json, weights and the processor's files)")
        directory = Path(self.path).expanduser()
        if not (directory / "config.json").is_file():
            raise MissingFileError(f"model.transformers.path: {directory} has no config.json (expected a "
                                   "transformers model directory, e.g. a downloaded Qwen/Qwen2.5-VL-7B-Instruct)")
        return directory


def load_processor(config: TransformersConfig):
    """The model's ``AutoProcessor``, its image area bounded by ``min_pixels`` / ``max_pixels`` where set (Qwen-VL
    processors: ``size`` = ``{shortest_edge: min_pixels, longest_edge: max_pixels}``, areas in pixels); it must have a
    chat template."""
    from transformers import AutoProcessor

    directory = config.directory()
    processor = AutoProcessor.from_pretrained(directory)
    if config.min_pixels or config.max_pixels:
        image_processor = getattr(processor, "image_processor", None)
        size = dict(getattr(image_processor, "size", None) or {})
        size = {key: value for key, value in size.items() if value is not None}
        if not {"shortest_edge", "longest_edge"} <= set(size):
            raise UserError(f"model.transformers.min_pixels / max_pixels: the image processor of {directory} "
                            f"({type(image_processor).__name__}) has no pixel-area bounds (Qwen-VL processors do); "
                            "leave both null")
        size = {"shortest_edge": config.min_pixels or size["shortest_edge"],
                "longest_edge": config.max_pixels or size["longest_edge"]}
        processor = AutoProcessor.from_pretrained(directory, size=size)
    if getattr(processor, "chat_template", None) is None:
        raise UserError(f"model.transformers.path: the processor in {directory} has no chat template "
                        "(chat_template.jinja or chat_template.json); this base is spelled by it")
    return processor


def config_image_token_id(model_config) -> int | None:
    """The id the model writes image features over (``image_token_id``; ``image_token_index`` in older llava
    configs); the processor's may name another token (Gemma 3's ``<start_of_image>``)."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(model_config, name, None)
        if isinstance(value, int):
            return value
    return None


def image_token_id_of(config: TransformersConfig) -> int | None:
    """:func:`config_image_token_id` of the directory's ``config.json``."""
    from transformers import AutoConfig

    return config_image_token_id(AutoConfig.from_pretrained(config.directory()))


def config_sha256(config: TransformersConfig) -> str:
    """The hash of the model's ``config.json`` as stored: two copies of one model agree."""
    return hashlib.sha256((config.directory() / "config.json").read_bytes()).hexdigest()


class TransformersLMM(AdaptedModel):
    """A frozen transformers vision-language model with adapters in its language model (or, with
    ``adapter.scope: model``, anywhere in it).

    The connector (``CONNECTOR_NAMES``) trains with ``train_projector``; everything else of the base stays frozen.
    """

    forward_methods = ("generate_batch",)

    def __init__(self, config: TransformersConfig, adapter: AdapterConfig, processor, train_projector: bool = True,
                 cluster_centroids: torch.Tensor | None = None,
                 quantization: QuantizationConfig = QuantizationConfig()):
        super().__init__()
        from transformers import AutoModelForImageTextToText

        self.base_config, self.scope = config, adapter.scope
        directory = config.directory()
        kwargs = {"dtype": DTYPES[config.dtype]}
        if config.attn_implementation:
            kwargs["attn_implementation"] = config.attn_implementation
        if quantization.enabled:  # quantized while loading: the whole model never sits in memory unquantized
            check_runs_here(quantization, dtypes={"model.transformers.dtype": DTYPES[config.dtype]})
            kwargs["quantization_config"] = transformers_quantization_config(
                quantization, unquantized_modules(_skeleton(directory), quantization.vision), DTYPES[config.dtype])
        self.hf = AutoModelForImageTextToText.from_pretrained(directory, **kwargs)
        if quantization.enabled and not has_quantized_weights(self.hf):
            raise RuntimeError(f"model.quantization: {quantization.describe()} was asked, but transformers loaded "
                               f"{type(self.hf).__name__} from {directory} without quantizing any layer")
        self.hf.requires_grad_(False)
        self.record = _record(self.hf, config_sha256(config))
        tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        end_of_turn = config.end_of_turn or tokenizer.eos_token
        self.stop_token_ids = _stop_ids(tokenizer, end_of_turn, self.hf.generation_config)
        self.image_token_id = config_image_token_id(self.hf.config)
        if self.image_token_id is None:
            self.image_token_id = processor_image_token_id(processor)
        accepted = set(inspect.signature(self.hf.forward).parameters)
        self.token_type_inputs = [name for name in TOKEN_TYPE_INPUTS
                                  if name in accepted and name in getattr(processor, "model_input_names", ())]

        if adapter.scope == "model" and adapter.adapter_method.needs_cluster_features:
            raise UserError("model.adapter.scope: model with method 'cluster': the vision tower sees image patches, "
                            "not samples, so it cannot be routed by each sample's cluster; use scope: language_model")
        self._add_adapters(self.adapted_root, adapter, cluster_centroids)
        self.connectors = connectors_of(self.hf)
        if train_projector and not self.connectors:
            log.warning("model.train_projector: %s has none of the connectors this package knows (%s); only the "
                        "adapters train", type(self.hf).__name__, ", ".join(CONNECTOR_NAMES))
        # The connector's own weights follow train_projector; adapters put inside it (scope: model) always train.
        adapters = {id(parameter) for parameter in adapter_parameters(self.adapted_root).values()}
        for connector in self.connectors:
            for parameter in connector.parameters():
                if id(parameter) not in adapters:
                    parameter.requires_grad_(train_projector)
            if train_projector:
                _train_in_fp32(connector, self.hf.dtype)

    # --- the parts --------------------------------------------------------------------------------------------

    @property
    def language_model(self) -> nn.Module:
        """The text decoder (``get_decoder()``: ``model.language_model``, Idefics3's ``model.text_model``)."""
        return self.hf.get_decoder()

    @property
    def vision_tower(self) -> nn.Module | None:
        return vision_tower_of(self.hf)

    @property
    def adapted_root(self) -> nn.Module:
        return self.language_model if self.scope == "language_model" else self.hf

    def decoder_blocks(self) -> list[nn.Module]:
        return decoder_blocks_of(self.hf)

    def vision_blocks(self) -> list[nn.Module]:
        return unsplit_blocks(self.hf, self.vision_tower)

    def frozen_units(self) -> list[nn.Module]:
        frozen = [connector for connector in self.connectors
                  if not any(parameter.requires_grad for parameter in connector.parameters())]
        return frozen_units_of(self.hf, frozen)

    def train(self, mode: bool = True) -> "TransformersLMM":
        super().train(mode)
        if self.vision_tower is not None:
            self.vision_tower.eval()  # frozen: inference behaviour (the connector inside has no dropout)
        return self

    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder (and vision) block during backward, non-reentrant (RNG state and kwargs kept)."""
        if hasattr(self.hf, "activation_checkpointing_enable"):  # transformers >= 5
            self.hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def base_record(self) -> dict:
        return dict(self.record)

    # --- running it -------------------------------------------------------------------------------------------

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch: FoodBatch) -> dict:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if batch.pixel_values is not None:
            pixels = batch.pixel_values
            inputs["pixel_values"] = pixels.to(self.hf.dtype) if pixels.is_floating_point() else pixels
        inputs.update(batch.extra)
        for name in self.token_type_inputs:
            inputs[name] = (input_ids == self.image_token_id).long()
        return inputs

    def forward(self, batch: FoodBatch) -> torch.Tensor:
        """Teacher-forced logits of ``batch``'s whole conversations (the FSDP root's forward)."""
        self.set_routing(batch.attention_mask, batch.cluster_ids)
        inputs = self._inputs(batch.input_ids, batch.attention_mask, batch)
        return self.hf(**inputs, use_cache=False).logits

    def forward_batch(self, batch: FoodBatch) -> torch.Tensor:
        return self(batch)

    @torch.no_grad()
    def generate_batch(self, batch: FoodBatch, max_new_tokens: int, streamer=None,
                       temperature: float = 0.0) -> torch.Tensor:
        """Greedy (or sampled at ``temperature`` > 0), with the KV cache, stopping at the end of a turn or eos; the
        settings of the model's ``generation_config.json`` (sampling, temperature, repetition penalty, its own eos)
        do not apply."""
        from transformers import GenerationConfig

        self.set_routing(batch.prompt_attention_mask, batch.cluster_ids)
        inputs = self._inputs(batch.prompt_ids, batch.prompt_attention_mask, batch)
        settings = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=1, eos_token_id=self.stop_token_ids,
                                    pad_token_id=self.pad_token_id, top_p=None, use_cache=True, **sampling(temperature))
        output = self.hf.generate(**inputs, generation_config=settings, streamer=streamer)
        return output[:, batch.prompt_ids.shape[1]:]


def unsplit_blocks(model: nn.Module, root: nn.Module | None) -> list[nn.Module]:
    """The outermost modules of ``root`` whose class ``model`` declares unsplittable (``_no_split_modules``): its
    blocks, which FSDP shards and activation checkpointing recomputes one by one."""
    if root is None:
        return []
    classes = set(getattr(model, "_no_split_modules", None) or ())
    blocks: list[nn.Module] = []
    inside: set[int] = set()
    for module in root.modules():
        if id(module) not in inside and type(module).__name__ in classes and module is not root:
            blocks.append(module)
            inside.update(id(child) for child in module.modules())
    return blocks


def vision_tower_of(model: nn.Module) -> nn.Module | None:
    """The vision tower (``get_encoder(modality="image")``: ``model.visual``, ``model.vision_tower``, ...); None for
    a model that names none."""
    tower = model.get_encoder(modality="image")
    return None if tower is model or tower is getattr(model, "model", None) else tower


def decoder_blocks_of(model: nn.Module) -> list[nn.Module]:
    """The language model's blocks: its classes in ``_no_split_modules``, or without those the decoder's
    ``layers``, as every transformers decoder names them."""
    decoder = model.get_decoder()
    return unsplit_blocks(model, decoder) or list(getattr(decoder, "layers", []))


def frozen_units_of(model: nn.Module, frozen_connectors: list[nn.Module]) -> list[nn.Module]:
    """What FSDP shards as one unit each, children before the modules that contain them: the vision blocks, the
    vision tower (its remaining weights), the decoder blocks, the embedding and the head unless tied (the root then
    keeps both), and each of ``frozen_connectors`` outside the tower. ``TransformersLMM.frozen_units`` and the
    estimate's largest unit (``estimate.py``) both read it."""
    tower = vision_tower_of(model)
    units = [*unsplit_blocks(model, tower), *([tower] if tower is not None else []), *decoder_blocks_of(model)]
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is not embedding.weight:
        units += [embedding] + ([head] if head is not None else [])
    inside_tower = set() if tower is None else {id(module) for module in tower.modules()}
    return units + [connector for connector in frozen_connectors if id(connector) not in inside_tower]


def _skeleton(directory: Path) -> nn.Module:
    """The model of ``directory``'s ``config.json`` on the meta device: its module names, no memory."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(directory))


def unquantized_modules(model: nn.Module, vision: bool) -> list[str]:
    """Names of the modules ``model.quantization`` leaves in the model's dtype: the connectors (trained with
    ``train_projector``, and small), the output layer, and the vision tower unless ``vision``. transformers matches
    them as name prefixes; the estimate counts the rest (``estimate.py``)."""
    names = {id(module): name for name, module in model.named_modules()}
    kept = [*connectors_of(model), model.get_output_embeddings()]
    if not vision:
        kept.append(vision_tower_of(model))
    return [names[id(module)] for module in kept if module is not None and id(module) in names]


def connectors_of(model: nn.Module) -> list[nn.Module]:
    """The modules between vision tower and language model that ``CONNECTOR_NAMES`` finds in ``model``."""
    inner = getattr(model, "model", model)
    found = []
    for name in CONNECTOR_NAMES:
        try:
            found.append(inner.get_submodule(name))
        except AttributeError:
            continue
    return found


def _train_in_fp32(connector: nn.Module, base_dtype: torch.dtype) -> None:
    """A trained connector keeps fp32 weights over a bf16/fp16 base, as the adapters and the LLaVA base's projector
    do (AdamW on bf16 weights loses small updates): its floating inputs are cast up on the way in and its output
    back to the base's dtype on the way out, so the model around it sees what it saw before."""
    if base_dtype == torch.float32:
        return
    connector.float()
    called = list(connector) if isinstance(connector, nn.ModuleList) else [connector]  # a list is never called

    def cast_inputs(_, args, kwargs):
        cast = lambda value: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
        return tuple(cast(value) for value in args), {name: cast(value) for name, value in kwargs.items()}

    def cast_output(_, __, ___, output):
        return output.to(base_dtype) if torch.is_tensor(output) and output.is_floating_point() else output

    for module in called:
        module.register_forward_pre_hook(cast_inputs, with_kwargs=True)
        module.register_forward_hook(cast_output, with_kwargs=True)


def _stop_ids(tokenizer, end_of_turn: str, generation_config) -> list[int]:
    """The end-of-turn id, the tokenizer's eos and the model's own eos ids: generation stops at any of them."""
    end_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    if end_id is None or end_id == tokenizer.unk_token_id:
        raise UserError(f"model.transformers.end_of_turn: {end_of_turn!r} is not a token of the model's tokenizer")
    ids = [end_id]
    configured = getattr(generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    for token_id in [tokenizer.eos_token_id, *configured]:
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    return ids


def _record(model: nn.Module, config_hash: str) -> dict:
    config = model.config
    text = config.get_text_config()
    return {"base": "transformers", "model_type": config.model_type, "architecture": type(model).__name__,
            "text": {"hidden_size": text.hidden_size, "layers": text.num_hidden_layers,
                     "vocab_size": text.vocab_size},
            "config_sha256": config_hash}
