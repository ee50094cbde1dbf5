"""RoDE with controlled sparsity: ReMoE's adaptive L1 penalty on the ReLU routers' gates (thu-ml/ReMoE, ICLR 2025).

A ReLU router is sparse by nature but nothing says how sparse. ReMoE adds ``lambda * L1`` to the loss, ``L1`` the
mean gate over layers, real tokens and experts, and steers ``lambda`` towards a target sparsity ``S*`` (the fraction
of zero gates; ``1 - k/E`` for about ``k`` active experts of ``E``): after every training step,

    lambda <- lambda * rate    if the step's sparsity is below S*   (push harder)
    lambda <- lambda / rate    otherwise                             (ease off)

with ``rate`` 1.2 and ``lambda`` starting at 1e-8, so the penalty grows geometrically until the routers are sparse
enough and then hovers around the coefficient that keeps them there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rode_lightning.adapters.layer import MixtureOfLoRALinear


@dataclass
class SparsityController:
    target: float
    coefficient: float = 1e-8
    rate: float = 1.2

    def update(self, sparsity: float) -> float:
        """One step of the rule; returns the new coefficient."""
        self.coefficient = self.coefficient * self.rate if sparsity < self.target else self.coefficient / self.rate
        return self.coefficient

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.target, self.coefficient, self.rate = float(state["target"]), float(state["coefficient"]), float(
            state["rate"])


def gate_counts(layers: list[MixtureOfLoRALinear]) -> torch.Tensor | None:
    """``[zero gates, all gates]`` over the layers' last training forward (``ReLURouter.l1_penalty``), summed."""
    counts = [layer.router.last_gate_counts for layer in layers
              if getattr(layer.router, "last_gate_counts", None) is not None]
    return torch.stack(counts).sum(dim=0) if counts else None
