"""Adapter configuration: which method, which experts, where to put them."""

from __future__ import annotations

from dataclasses import dataclass, field

from rode_lightning.adapters.methods import AdapterMethod, get_method
from rode_lightning.user_errors import UserError

SCOPES = ("language_model", "model")


@dataclass
class AdapterConfig:
    """How the language model is adapted.

    Args:
        method: the adaptation method, one of those registered in ``adapters/methods/`` (``rode``, ``softmax``,
            ``top1``, ``cluster``, ``lora`` and any registered since); ``--help`` lists each with its summary
            (``methods_help``, built from the registry).
        ranks: rank of each LoRA expert; experts may differ (RoDE's "diverse" experts), e.g. ``[2, 4, 8, 16]``.
        alpha: LoRA scaling numerator; expert ``i`` is scaled by ``alpha / ranks[i]``.
        dropout: dropout on the experts' input (not on the router's).
        target_modules: names of the ``nn.Linear`` layers to adapt. An entry matches a module whose name ends with
            ``.<entry>`` or equals it, dots included (``self_attn.q_proj``), as peft matches; ``re:<regex>`` is
            matched against the full module name with ``re.fullmatch``. (An entry with other regex characters and no
            ``re:`` is still read as a regex, with a warning.) ``all-linear``: every linear layer but the output layer
            (``lm_head``), as peft's. Every entry must match at least one layer.
        scope: where ``target_modules`` are looked for: ``language_model`` (the default: the language model only,
            so that ``mlp.gate_proj`` or ``q_proj`` never match a vision tower's layers of the same name, as
            Qwen2.5-VL's and CLIP's have) or ``model`` (the whole base model, vision tower and connector included;
            ``model.base: transformers`` only).
        load_balancing_coefficient: ``top1`` only: weight of the load-balancing loss (averaged over layers) added to
            the training loss (LLaVA-MoLE: 1e-2).
        num_clusters: ``cluster`` only: number of instruction clusters (k of the k-means on the data side).
        cluster_temperature: ``cluster`` only: softmax temperature tau of the gate (MoCLE: 0.05).
        universal_rank: ``cluster`` only: rank of the universal expert; ``null`` for the largest expert rank.
        sparsity_target: ``rode`` only: keep the routers' gates this sparse (fraction of zero gates over real
            tokens, experts and layers) with ReMoE's adaptive L1 penalty (``adapters/sparsity.py``); e.g. 0.75 =
            ``1 - k/E`` for about one active expert of four. ``null``: no penalty (RoDE as in the paper).
        sparsity_coefficient: the L1 penalty's starting coefficient (ReMoE: 1e-8).
        sparsity_update_rate: the factor the coefficient is multiplied by (below the target) or divided by (above
            it) after every training step (ReMoE: 1.2).
    """

    method: str = "rode"
    ranks: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj"])
    scope: str = "language_model"
    load_balancing_coefficient: float = 1e-2
    num_clusters: int = 8
    cluster_temperature: float = 0.05
    universal_rank: int | None = None
    sparsity_target: float | None = None
    sparsity_coefficient: float = 1e-8
    sparsity_update_rate: float = 1.2

    def __post_init__(self) -> None:
        method = get_method(self.method)
        if not self.ranks:
            raise UserError("adapter.ranks: the list of expert ranks is empty; give at least one rank, e.g. [8]")
        bad = [rank for rank in self.ranks if not isinstance(rank, int) or rank < 1]
        if bad:
            raise UserError(f"adapter.ranks: every rank must be a positive integer, got {bad}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"adapter.dropout: {self.dropout} is outside [0, 1)")
        if self.alpha <= 0:
            raise UserError(f"adapter.alpha: {self.alpha} must be positive")
        if self.num_clusters < 1:
            raise UserError(f"adapter.num_clusters: {self.num_clusters} must be at least 1")
        if self.cluster_temperature <= 0:
            raise UserError(f"adapter.cluster_temperature: {self.cluster_temperature} must be positive")
        if self.universal_rank is not None and self.universal_rank < 1:
            raise UserError(f"adapter.universal_rank: {self.universal_rank} must be a positive integer")
        if self.sparsity_target is not None and not 0.0 <= self.sparsity_target < 1.0:
            raise UserError(f"adapter.sparsity_target: {self.sparsity_target} is outside [0, 1)")
        if self.sparsity_coefficient <= 0 or self.sparsity_update_rate <= 1:
            raise UserError(f"adapter.sparsity_coefficient {self.sparsity_coefficient} must be positive and "
                            f"adapter.sparsity_update_rate {self.sparsity_update_rate} above 1")
        if self.scope not in SCOPES:
            raise UserError(f"adapter.scope: {self.scope!r}; expected one of {', '.join(SCOPES)}")
        if not self.target_modules:
            raise UserError("adapter.target_modules: empty; name at least one layer, e.g. [q_proj, k_proj]")
        method.validate(self)

    @property
    def num_experts(self) -> int:
        return len(self.ranks)

    @property
    def adapter_method(self) -> AdapterMethod:
        """The registered method ``method`` names (``adapters/methods/``): ask it, rather than compare names."""
        return get_method(self.method)

    @property
    def layer_ranks(self) -> list[int]:
        """Ranks of the experts each adapted layer holds (MoCLE's universal expert appended for ``cluster``)."""
        return self.adapter_method.expert_ranks(self)
