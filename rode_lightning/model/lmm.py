"""The LLaVA-style food LMM: vision encoder -> projector -> language model with adapters.

Image tokens enter the language model the way ``llava-hf`` does it: the LLaVA conversation format
(``model/formats/llava.py``) repeats the ``<image>`` token once per patch, and :meth:`FoodLMM.embed` writes the projected patch features over those positions. The text sequence
therefore already has its final length before the model sees it, which keeps padding, attention masks, labels
and ``generate`` (with its KV cache) plain transformers code.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import add_adapters, auxiliary_loss, describe_adapted_layers
from rode_lightning.adapters.routers import ClusterRouter
from rode_lightning.compat import is_compiled
from rode_lightning.conventions import IMAGE_PLACEHOLDER
from rode_lightning.model.language import LanguageConfig, load_language_model
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.vision import VisionConfig, VisionEncoder

log = logging.getLogger(__name__)


class FoodLMM(nn.Module):
    def __init__(self, vision: VisionConfig, language: LanguageConfig, adapter: AdapterConfig,
                 tokenizer: PreTrainedTokenizerBase, train_projector: bool = True,
                 cluster_centroids: torch.Tensor | None = None):
        """``cluster_centroids`` (``num_clusters x dim``, from the data side's k-means) initialise MoCLE's cluster
        embedding; without them (e.g. before loading a checkpoint) it starts random, ``CLUSTER_WIDTH`` wide
        (``adapters/methods/cluster.py``)."""
        super().__init__()
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

        self.vision.requires_grad_(False)
        self.language_model.requires_grad_(False)
        self.projector.requires_grad_(train_projector)
        self.routing = RoutingContext()
        # MoCLE's: one embedding per cluster, shared by every layer's gate (Eq. 1); None for other methods.
        self.cluster_embedding = adapter.adapter_method.cluster_embedding(adapter, cluster_centroids)
        cluster_dim = None if self.cluster_embedding is None else self.cluster_embedding.shape[1]
        self.adapted_modules = add_adapters(self.language_model, adapter, cluster_dim, self.routing)
        log.info("%s", describe_adapted_layers(self.adapted_modules))  # what target_modules matched, at start-up

    def set_cluster_width(self, width: int) -> None:
        """Rebuild MoCLE's cluster embedding and every layer's cluster gate for ``width``-wide cluster features.

        The width is the instruction encoder's (``data/clusters.py``: 384 for MiniLM, up to 64 for TF-IDF), known
        only once the data module has clustered. A model built without its centroids (``load_from_checkpoint``, an
        adapter loaded outside the CLI) starts ``CLUSTER_WIDTH`` wide and takes the width of the tensors it is about to load. The
        new tensors are placeholders for those; call it before the optimizer exists.
        """
        if self.cluster_embedding is None:
            raise ValueError("set_cluster_width: this model has no cluster routing (its adapter method does not "
                             "route by cluster)")
        old = self.cluster_embedding
        self.cluster_embedding = nn.Parameter(old.new_zeros(old.shape[0], width), requires_grad=old.requires_grad)
        for router in self.modules():
            if isinstance(router, ClusterRouter):
                gate = router.linear
                router.linear = nn.Linear(width, gate.out_features, bias=False, device=gate.weight.device,
                                          dtype=gate.weight.dtype).requires_grad_(gate.weight.requires_grad)

    def train(self, mode: bool = True) -> "FoodLMM":
        super().train(mode)
        self.vision.eval()  # frozen: keep any normalisation or dropout in inference behaviour
        return self

    def set_routing(self, attention_mask: torch.Tensor | None, cluster_ids: torch.Tensor | None) -> None:
        """Fill the routing context every router of this model reads (see ``adapters/context.py``)."""
        self.routing.token_mask = attention_mask.bool() if attention_mask is not None else None
        if self.cluster_embedding is not None:
            if cluster_ids is None:
                raise ValueError("cluster routing (adapter.method 'cluster') needs cluster_ids for every sample")
            self.routing.cluster_features = self.cluster_embedding[cluster_ids]
        else:
            self.routing.cluster_features = None

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Mean over adapted layers of their routers' auxiliary losses from the last forward, or None."""
        return auxiliary_loss(self.language_model)

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
                 max_new_tokens: int = 64, cluster_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy answers for left-padded prompts, with the KV cache; returns only the new tokens."""
        self.set_routing(attention_mask, cluster_ids)
        embeddings = self.embed(input_ids, images)
        return self.language_model.generate(
            inputs_embeds=embeddings, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=False, use_cache=True, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
        )

    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder block during backward (non-reentrant, so RNG state and kwargs are preserved)."""
        model = self.language_model
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def compile_decoder_blocks(self, backend: str) -> None:
        """``torch.compile`` each decoder block in place (``nn.Module.compile``), once. Per block rather than the
        whole LLaMA: the block is what FSDP gathers and what activation checkpointing recomputes, and ``generate``'s
        changing shapes then recompile small graphs only."""
        for block in self.language_model.model.layers:
            if not is_compiled(block):
                block.compile(backend=backend)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: parameter for name, parameter in self.named_parameters() if parameter.requires_grad}
