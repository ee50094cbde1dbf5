"""Lightning callbacks: router monitoring in TensorBoard, prediction output, stopping on a non-finite loss or at a
signal (with a resumable checkpoint)."""

from rode_lightning.callbacks.interrupt import GracefulInterrupt
from rode_lightning.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from rode_lightning.callbacks.prediction_writer import JSONLPredictionWriter
from rode_lightning.callbacks.router_sparsity import RouterSparsityMonitor

__all__ = ["GracefulInterrupt", "JSONLPredictionWriter", "NonFiniteLossError", "NonFiniteLossGuard",
           "RouterSparsityMonitor"]
