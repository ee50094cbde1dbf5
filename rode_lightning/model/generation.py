"""Greedy generation that also says why it stopped and which experts answered.

What ``predict``, the inference engine (``inference/engine.py``) and the commands built on it need beyond the new
token ids: each row's real generated tokens (up to and including the token that stopped it), whether it stopped at an
end-of-turn token or ran out of ``max_new_tokens`` (an OpenAI ``finish_reason``: ``stop`` or ``length``), and, when
asked, the gates of every mixture layer at the position that produced each generated token: the prompt's last
position for the first token, then each generated token as it is fed back. Those are the routing decisions behind
the answer (the RoDE paper's Figure 6, for one answer), read from :attr:`MixtureOfLoRALinear.last_gates` by a forward
hook per layer; plain LoRA has no router and records nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from rode_lightning.adapters.inject import adapter_layers
from rode_lightning.batch import FoodBatch
from rode_lightning.model.adapted import AdaptedModel


@dataclass
class Generated:
    """One row's generation.

    Attributes:
        token_ids: the generated tokens, the stopping token included (what ``decode`` skips as special).
        finish_reason: ``stop`` (an end-of-turn or eos token) or ``length`` (``max_new_tokens`` reached).
        gates: per adapted layer (module name), ``generated tokens x experts``: the gates at the position that
            produced each token; empty without ``record_gates`` or without routers.
    """

    token_ids: list[int]
    finish_reason: str
    gates: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean_gates(self) -> dict[str, list[float]]:
        """Per layer, each expert's mean gate over the generated tokens."""
        return {name: values.float().mean(dim=0).tolist() for name, values in self.gates.items() if len(values)}


@contextmanager
def recorded_gates(model: AdaptedModel):
    """Collect, per mixture layer, the gates of every forward inside the block: ``{name: [(rows, positions, E)]}``."""
    records: dict[str, list[torch.Tensor]] = {}
    handles = []
    # The language model's layers: their inputs are (rows, positions, width); a vision tower's (scope: model) are not
    # per generated token.
    for name, layer in adapter_layers(model.language_model).items():
        def keep(module, args, output, name=name):
            shape = args[0].shape[:-1]  # (rows, positions)
            records.setdefault(name, []).append(module.last_gates.reshape(*shape, -1).cpu())
        handles.append(layer.register_forward_hook(keep))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def generate(model: AdaptedModel, batch: FoodBatch, max_new_tokens: int, record_gates: bool = False,
             streamer=None, temperature: float = 0.0) -> list[Generated]:
    """Greedy answers (sampled at ``temperature`` > 0) to ``batch``'s prompts, one :class:`Generated` per row;
    generation stops at the model's ``stop_token_ids``."""
    if record_gates:
        with recorded_gates(model) as records:
            new_tokens = model.generate_batch(batch, max_new_tokens, streamer=streamer, temperature=temperature)
    else:
        records = {}
        new_tokens = model.generate_batch(batch, max_new_tokens, streamer=streamer, temperature=temperature)
    stops = set(model.stop_token_ids)
    results = []
    for row, tokens in enumerate(new_tokens.tolist()):
        end = next((position + 1 for position, token in enumerate(tokens) if token in stops), None)
        kept = tokens[:end] if end is not None else tokens
        finish = "stop" if end is not None else ("length" if len(kept) >= max_new_tokens else "stop")
        gates = {}
        for name, steps in records.items():
            # The prefill's last position produced the first token; each later forward holds one position per row.
            per_token = [steps[0][row, -1]] + [step[row, -1] for step in steps[1:]]
            gates[name] = torch.stack(per_token[: len(kept)]) if per_token else torch.zeros(0)
        results.append(Generated(kept, finish, gates))
    return results
