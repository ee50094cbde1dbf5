"""The LLaVA-style food LMM: vision encoder -> projector -> language model with adapters.

Image tokens enter the language model the way ``llava-hf`` does it: the LLaVA conversation format
(``model/formats/llava.py``) repeats the ``<image>`` token once per patch, and :meth:`FoodLMM.embed` writes the projected patch features over those positions. The text sequence
therefore already has its final length before the model sees it, which keeps padding, attention masks, labels
and ``generate`` (with its KV cache) plain transformers code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.batch import FoodBatch
from rode_lightning.conventions import IMAGE_PLACEHOLDER
from rode_lightning.model.adapted import AdaptedModel, sampling
from rode_lightning.model.dtypes import DTYPES
from rode_lightning.model.language import LanguageConfig, load_language_model
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.quantization import QuantizationConfig, check_runs_here, quantize_linear_layers
from rode_lightning.model.vision import VisionConfig, VisionEncoder
from rode_lightning.user_errors import UserError


class FoodLMM(AdaptedModel):
    forward_methods = ("generate",)  # FSDP registers it: generate_batch calls it
    def __init__(self, vision: VisionConfig, language: LanguageConfig, adapter: AdapterConfig,
                 tokenizer: PreTrainedTokenizerBase, train_projector: bool = True,
                 cluster_centroids: torch.Tensor | None = None,
                 quantization: QuantizationConfig = QuantizationConfig()):
        """``cluster_centroids`` (``num_clusters x dim``, from the data side's k-means) initialise MoCLE's cluster
        embedding; without them (e.g. before loading a checkpoint) it starts random, ``CLUSTER_WIDTH`` wide
        (``adapters/methods/cluster.py``). ``quantization``: the LLaMA's linear layers (and with ``vision`` the
        tower's) quantized once loaded, before the adapters wrap them (``model/quantization.py``)."""
        super().__init__()
        check_runs_here(quantization, dtypes={"model.language.dtype": language.torch_dtype,
                                              **({"model.vision.dtype": DTYPES[vision.dtype]} if quantization.vision
                                                 else {})})
        self.vision = VisionEncoder(vision)
        # With ``language.path``: LLaMA and projector weights from the checkpoint, the LLaMA's own hidden size, and
        # the embedding resized to the tokenizer (model/language.py); the vision width must be mm_hidden_size.
        self.language_model, projector_weights = load_language_model(language, len(tokenizer), self.vision.output_dim)
        self.projector = MLPProjector(self.vision.output_dim, self.language_model.config.hidden_size)
        if projector_weights is not None:  # the checkpoint's projector: trained further only with train_projector
            projector_weights.load_into(self.projector, vision_width=self.vision.output_dim)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.num_image_tokens = vision.num_patches

        if quantization.enabled:  # the output layer keeps its dtype, as in QLoRA and transformers' quantizers
            quantize_linear_layers(self.language_model, quantization, keep=lambda name: name == "lm_head")
            if quantization.vision:
                quantize_linear_layers(self.vision, quantization)
        self.vision.requires_grad_(False)
        self.language_model.requires_grad_(False)
        self.projector.requires_grad_(train_projector)
        if adapter.scope != "language_model":
            raise UserError(f"model.adapter.scope: {adapter.scope!r}; the LLaVA-1.5 base adapts its language model "
                             "only (scope: language_model)")
        self._add_adapters(self.language_model, adapter, cluster_centroids)

    def train(self, mode: bool = True) -> "FoodLMM":
        super().train(mode)
        self.vision.eval()  # frozen: keep any normalisation or dropout in inference behaviour
        return self

    def embed(self, input_ids: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with projected image patches written over the ``<image>`` positions."""
        embeddings = self.language_model.get_input_embeddings()(input_ids)
        image_positions = input_ids == self.image_token_id
        if images is None:
            if image_positions.any():
                raise ValueError("input_ids contain <image> tokens but no images were given")
            return embeddings
        per_sample = image_positions.sum(dim=1)
        if not torch.all(per_sample == self.num_image_tokens):
            raise ValueError(f"every sample needs exactly {self.num_image_tokens} <image> tokens (one per patch); "
                             f"got {per_sample.tolist()}")
        with torch.no_grad():
            patches = self.vision(images).to(self.projector.layers[0].weight.dtype)
        image_embeddings = self.projector(patches).to(embeddings.dtype)
        return embeddings.masked_scatter(image_positions.unsqueeze(-1), image_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: torch.Tensor | None,
                cluster_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits, ``(batch, sequence, vocab)``."""
        self.set_routing(attention_mask, cluster_ids)
        embeddings = self.embed(input_ids, images)
        return self.language_model(inputs_embeds=embeddings, attention_mask=attention_mask, use_cache=False).logits

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: torch.Tensor | None,
                 max_new_tokens: int = 64, cluster_ids: torch.Tensor | None = None, streamer=None,
                 temperature: float = 0.0) -> torch.Tensor:
        """Answers for left-padded prompts, with the KV cache, greedy at ``temperature`` 0 (else sampled); returns
        only the new tokens. ``streamer``: transformers' streamer interface (``put`` each step's tokens, ``end``)."""
        self.set_routing(attention_mask, cluster_ids)
        embeddings = self.embed(input_ids, images)
        return self.language_model.generate(
            inputs_embeds=embeddings, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            use_cache=True, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id, streamer=streamer,
            **sampling(temperature),
        )

    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder block during backward (non-reentrant, so RNG state and kwargs are preserved)."""
        model = self.language_model
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # --- the AdaptedModel interface -----------------------------------------------------------------------------

    def forward_batch(self, batch: FoodBatch) -> torch.Tensor:
        return self(batch.input_ids, batch.attention_mask, batch.pixel_values, batch.cluster_ids)

    def generate_batch(self, batch: FoodBatch, max_new_tokens: int, streamer=None,
                       temperature: float = 0.0) -> torch.Tensor:
        return self.generate(batch.prompt_ids, batch.prompt_attention_mask, batch.pixel_values,
                             max_new_tokens=max_new_tokens, cluster_ids=batch.cluster_ids, streamer=streamer,
                             temperature=temperature)

    @property
    def adapted_root(self) -> nn.Module:
        return self.language_model

    @property
    def stop_token_ids(self) -> list[int]:
        return [self.eos_token_id]

    def decoder_blocks(self) -> list[nn.Module]:
        return list(self.language_model.model.layers)

    def vision_blocks(self) -> list[nn.Module]:
        return [self.vision]  # open_clip's tower: one unit (its blocks share one attention-pool-free trunk)

    def frozen_units(self) -> list[nn.Module]:
        """The vision encoder, each decoder block, embedding and LM head (unless tied: then the root keeps both),
        and the projector when it is not trained."""
        language_model = self.language_model
        units = [*self.vision_blocks(), *self.decoder_blocks()]
        embedding, head = language_model.get_input_embeddings(), language_model.get_output_embeddings()
        if head is None or head.weight is not embedding.weight:
            units += [embedding] + ([head] if head is not None else [])
        if not any(parameter.requires_grad for parameter in self.projector.parameters()):
            units.append(self.projector)
        return units

    def base_record(self) -> dict:
        text = self.language_model.config
        return {"base": "llava", "model_type": "llava-1.5", "architecture": type(self.language_model).__name__,
                "text": {"hidden_size": text.hidden_size, "layers": text.num_hidden_layers,
                         "vocab_size": text.vocab_size},
                "vision": {"width": self.vision.output_dim, "patches": self.num_image_tokens}}
