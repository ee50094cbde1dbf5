"""Lightning callbacks: router monitoring in TensorBoard, prediction output, stopping on a non-finite loss."""

from rode_lightning.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from rode_lightning.callbacks.prediction_writer import JSONLPredictionWriter
from rode_lightning.callbacks.router_sparsity import RouterSparsityMonitor

__all__ = ["JSONLPredictionWriter", "NonFiniteLossError", "NonFiniteLossGuard", "RouterSparsityMonitor"]
