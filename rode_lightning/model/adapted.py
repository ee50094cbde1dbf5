"""What every base model of this project is once adapted: one interface for the LLaVA-1.5 base and any transformers
vision-language model.

The rest of the package (the Lightning module, FSDP sharding, compiling, activation checkpointing, checkpoints, the
router callbacks) talks to a base only through :class:`AdaptedModel`, so that a new base is one class, not a change
in each of those places. The shared parts live here: the routing context every router reads, MoCLE's cluster
embedding, the auxiliary router loss and per-block compiling. A base says where its parts are (its decoder blocks,
its frozen units for sharding, the module its adapters were put into) and how it runs a batch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch
from torch import nn

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import add_adapters, auxiliary_loss, describe_adapted_layers
from rode_lightning.adapters.routers import ClusterRouter
from rode_lightning.batch import FoodBatch
from rode_lightning.compat import is_compiled

log = logging.getLogger(__name__)



def sampling(temperature: float) -> dict:
    """``generate``'s decoding arguments: greedy at ``temperature`` 0; above it, sampling from the softmax of the
    logits divided by ``temperature`` with no top-k or top-p cut (whatever a model's generation config says)."""
    if temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_k": None}
    return {"do_sample": True, "temperature": float(temperature), "top_k": None}

class AdaptedModel(nn.Module, ABC):
    """A frozen base model with adapters, run on :class:`FoodBatch` es.

    Subclasses build the base, then call :meth:`_add_adapters` on the module the adapters go into.
    """

    forward_methods: tuple[str, ...] = ()
    """Methods besides ``forward`` that run the whole model (generation): FSDP registers them as forward methods,
    so that the root unit's parameters are gathered for them too."""
    stop_token_ids: list[int]
    """The ids generation stops at (end of turn, eos)."""
    language_model: nn.Module
    """The language model (the LLaVA base's LLaMA; a transformers model's ``get_decoder()``)."""
    routing: RoutingContext
    cluster_embedding: nn.Parameter | None
    adapted_modules: list[str]

    # --- what a base implements -------------------------------------------------------------------------------

    @abstractmethod
    def forward_batch(self, batch: FoodBatch) -> torch.Tensor:
        """Teacher-forced next-token logits of the whole conversations, ``(batch, sequence, vocab)``."""

    @abstractmethod
    def generate_batch(self, batch: FoodBatch, max_new_tokens: int, streamer=None,
                       temperature: float = 0.0) -> torch.Tensor:
        """Answers to the batch's (left-padded) prompts: the new token ids only, ``(batch, new tokens)``; greedy at
        ``temperature`` 0, else sampled from the softmax of the logits divided by it (no top-k or top-p).
        ``streamer``: transformers' streamer interface, given the prompt, then each step's new tokens."""

    @property
    @abstractmethod
    def adapted_root(self) -> nn.Module:
        """The module the adapters were put into (the language model, or the whole model with ``scope: model``):
        the router callbacks and the sparsity controller look for mixture layers there."""

    @abstractmethod
    def decoder_blocks(self) -> list[nn.Module]:
        """The language model's decoder blocks, in order: what FSDP gathers one at a time, what activation
        checkpointing recomputes and what ``model.compile`` compiles."""

    @abstractmethod
    def vision_blocks(self) -> list[nn.Module]:
        """The vision tower's blocks (FSDP units of their own)."""

    @abstractmethod
    def frozen_units(self) -> list[nn.Module]:
        """The frozen modules FSDP shards as one unit each (blocks, the vision tower, embedding and head, a frozen
        connector), children before the modules that contain them."""

    @abstractmethod
    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder block during backward."""

    @abstractmethod
    def base_record(self) -> dict:
        """What this base is, for ``adapter_config.json``: an adapter trained on one base is refused on another."""

    # --- shared -----------------------------------------------------------------------------------------------

    def _add_adapters(self, root: nn.Module, adapter: AdapterConfig, cluster_centroids: torch.Tensor | None) -> None:
        """Put ``adapter``'s layers into ``root`` (freezing the rest of it) and list them at start-up."""
        self.routing = RoutingContext()
        # MoCLE's: one embedding per cluster, shared by every layer's gate (Eq. 1); None for other methods.
        self.cluster_embedding = adapter.adapter_method.cluster_embedding(adapter, cluster_centroids)
        cluster_dim = None if self.cluster_embedding is None else self.cluster_embedding.shape[1]
        self.adapted_modules = add_adapters(root, adapter, cluster_dim, self.routing)
        log.info("%s", describe_adapted_layers(self.adapted_modules))  # what target_modules matched, at start-up

    def set_routing(self, attention_mask: torch.Tensor | None, cluster_ids: torch.Tensor | None) -> None:
        """Fill the routing context every router of this model reads (see ``adapters/context.py``)."""
        self.routing.token_mask = attention_mask.bool() if attention_mask is not None else None
        if self.cluster_embedding is not None:
            if cluster_ids is None:
                raise ValueError("cluster routing (adapter.method 'cluster') needs cluster_ids for every sample")
            self.routing.cluster_features = self.cluster_embedding[cluster_ids]
        else:
            self.routing.cluster_features = None

    def set_cluster_width(self, width: int) -> None:
        """Rebuild MoCLE's cluster embedding and every layer's cluster gate for ``width``-wide cluster features.

        The width is the instruction encoder's (``data/clusters.py``: 384 for MiniLM, up to 64 for TF-IDF), known
        only once the data module has clustered. A model built without its centroids (``load_from_checkpoint``, an
        adapter loaded outside the CLI) starts ``CLUSTER_WIDTH`` wide and takes the width of the tensors it is about
        to load. The new tensors are placeholders for those; call it before the optimizer exists.
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

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Mean over adapted layers of their routers' auxiliary losses from the last forward, or None."""
        return auxiliary_loss(self.adapted_root)

    def compile_decoder_blocks(self, backend: str) -> None:
        """``torch.compile`` each decoder block in place (``nn.Module.compile``), once. Per block rather than the
        whole language model: the block is what FSDP gathers and what activation checkpointing recomputes, and
        ``generate``'s changing shapes then recompile small graphs only."""
        for block in self.decoder_blocks():
            if not is_compiled(block):
                block.compile(backend=backend)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: parameter for name, parameter in self.named_parameters() if parameter.requires_grad}
