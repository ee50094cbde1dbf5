"""RoDE and the methods it is compared with, as a library for any PyTorch training loop (no Lightning needed).

    from rode_lightning.adapters import AdapterConfig, add_adapters, auxiliary_loss, save_adapter, load_adapter

    config = AdapterConfig(method="rode", ranks=[2, 4, 8, 16], target_modules=["q_proj", "k_proj"])
    add_adapters(model, config)        # in place; everything but the adapters frozen
    loss = loss + 1e-2 * (auxiliary_loss(model) or 0)   # top-1's load balancing, where the method has one
    save_adapter(model, config, "my_adapter")           # adapter-only: a few MB next to a 13 GB base

README.md, "Use the adapters in your own training code", has the whole example.
"""

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.context import RoutingContext
from rode_lightning.adapters.inject import (add_adapters, adapter_layers, auxiliary_loss, find_target_modules,
                                            routing_context)
from rode_lightning.adapters.layer import MixtureOfLoRALinear
from rode_lightning.adapters.methods import METHODS, AdapterMethod, get_method, register_method
from rode_lightning.adapters.saving import adapter_state_dict, load_adapter, save_adapter

__all__ = ["METHODS", "AdapterConfig", "AdapterMethod", "MixtureOfLoRALinear", "RoutingContext", "adapter_layers",
           "adapter_state_dict", "add_adapters", "auxiliary_loss", "find_target_modules", "get_method", "load_adapter",
           "register_method", "routing_context", "save_adapter"]
