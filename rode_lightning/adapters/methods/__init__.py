"""The adaptation methods, one module each, and the registry that names them.

Adding a method is a new module with an :class:`AdapterMethod` subclass and one :func:`register_method` line below
(README.md, "Adding a method"); ``adapter.method: <name>`` then selects it everywhere.
"""

from __future__ import annotations

from rode_lightning.adapters.methods.base import AdapterMethod, AdapterSettings
from rode_lightning.adapters.methods.cluster import ClusterRouting
from rode_lightning.adapters.methods.lora import LoRA
from rode_lightning.adapters.methods.rode import RoDE
from rode_lightning.adapters.methods.softmax import SoftmaxMixture
from rode_lightning.adapters.methods.top1 import Top1
from rode_lightning.user_errors import UserError

METHODS: dict[str, AdapterMethod] = {}
"""Every registered method by ``adapter.method`` name, in registration order."""


def register_method(method: AdapterMethod) -> AdapterMethod:
    """Make ``method`` selectable as ``adapter.method: <method.name>``; a name is registered once."""
    if method.name in METHODS:
        raise ValueError(f"adapter method {method.name!r} is already registered ({type(METHODS[method.name]).__name__})")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> AdapterMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"adapter.method: {name!r} is not one of {', '.join(METHODS)}") from None


def methods_help() -> str:
    """The help of ``adapter.method``: every registered method with its one-line summary, in registration order.
    The command line builds it when its parser is built, so a method registered before (README.md, "Adding a
    method") is listed as the built-in ones are."""
    listed = "; ".join(f"``{name}``: {method.describe()}" for name, method in METHODS.items())
    return f"the adaptation method, one of those registered ({listed})."


register_method(RoDE())
register_method(SoftmaxMixture())
register_method(Top1())
register_method(ClusterRouting())
register_method(LoRA())

__all__ = ["METHODS", "AdapterMethod", "AdapterSettings", "get_method", "methods_help", "register_method"]
