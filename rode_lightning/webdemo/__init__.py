"""The web demo (``python -m rode_lightning demo``): a gradio page to ask trained models about a photo, with the
experts that answered drawn as heatmaps (``heatmaps.py``) beside the answers (``app.py``)."""
