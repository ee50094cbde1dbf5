"""Conversation formats: how a base model spells a conversation (token ids, pixel inputs, masks).

``llava.py`` is LLaVA-1.5's spelling (the paper's base); ``chat_template.py`` spells it with a transformers
processor's own chat template (Qwen2-VL and the other image-text-to-text models).
"""

from rode_lightning.model.formats.base import ConversationFormat, pad_sequences
from rode_lightning.model.formats.chat_template import ChatTemplateFormat
from rode_lightning.model.formats.llava import LlavaFormat

__all__ = ["ChatTemplateFormat", "ConversationFormat", "LlavaFormat", "pad_sequences"]
