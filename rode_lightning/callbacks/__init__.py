"""Lightning callbacks: router monitoring in TensorBoard, prediction output."""

from rode_lightning.callbacks.prediction_writer import JSONLPredictionWriter
from rode_lightning.callbacks.router_sparsity import RouterSparsityMonitor

__all__ = ["JSONLPredictionWriter", "RouterSparsityMonitor"]
