"""Using a trained model: the inference engine that answers questions about images (and the commands on it)."""

from rode_lightning.inference.engine import Answer, InferenceEngine, Request

__all__ = ["Answer", "InferenceEngine", "Request"]
