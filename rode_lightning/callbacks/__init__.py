"""Lightning callbacks for monitoring RoDE training."""

from rode_lightning.callbacks.router_sparsity import RouterSparsityMonitor

__all__ = ["RouterSparsityMonitor"]
