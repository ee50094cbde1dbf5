"""Serving a trained model: an OpenAI-compatible chat-completions server on LitServe (``python -m rode_lightning
serve``): the request protocol and its checks (``protocol.py``, ``images.py``), the HTTP side (``spec.py``), the model
side (``worker.py``) and the server's options (``server.py``)."""
