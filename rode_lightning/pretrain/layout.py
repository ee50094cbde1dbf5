"""Writing the demo base in the layouts real weights are released in, so that it loads through the same code as
LLaVA-7B and CLIP ViT-L (``model/llava_weights.py``, ``model/open_clip_weights.py``):

* the CLIP as an open_clip checkpoint, ``open_clip_model.safetensors`` (every tensor of the CLIP: ``visual.*``,
  the text tower, ``logit_scale``);
* the language model and projector as a LLaVA v1.5 directory: ``config.json`` (``model_type`` ``llava_llama``,
  the LLaMA fields at the top level, ``mm_hidden_size``, ``mm_projector_type`` ``mlp2x_gelu``), ``model.safetensors``
  (``model.*``, ``lm_head.*``, ``model.mm_projector.{0,2}.*``) and the tokenizer's files.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from rode_lightning.atomic import replaced_atomically, write_json_atomically

VISION_CHECKPOINT = "open_clip_model.safetensors"
LLAVA_DIRECTORY = "llava-v1.5-demo"


def _contiguous(state: dict) -> dict:
    return {name: tensor.detach().contiguous().clone() for name, tensor in state.items()}


def write_open_clip_checkpoint(clip: nn.Module, path: Path) -> Path:
    # Through atomic.py as every file the tool writes: safetensors alone would make it readable by its owner only.
    with replaced_atomically(path) as partial:
        save_file(_contiguous(clip.state_dict()), str(partial), metadata={"format": "pt"})
    return path


def write_llava_directory(language_model: LlamaForCausalLM, projector: nn.Module, tokenizer: PreTrainedTokenizerBase,
                          vision_width: int, directory: Path, vision_tower: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = language_model.config.to_dict()
    config.update(model_type="llava_llama", architectures=["LlavaLlamaForCausalLM"], mm_hidden_size=vision_width,
                  mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                  mm_vision_tower=vision_tower, mm_use_im_start_end=False, torch_dtype="float32")
    for key in ("dtype", "_attn_implementation_autoset", "transformers_version"):
        config.pop(key, None)
    write_json_atomically(directory / "config.json", config, indent=2, sort_keys=True)
    tensors = _contiguous(language_model.state_dict())
    tensors.update({f"model.mm_projector.{name.removeprefix('layers.')}": tensor
                    for name, tensor in _contiguous(projector.state_dict()).items()})
    with replaced_atomically(directory / "model.safetensors") as partial:
        save_file(tensors, str(partial), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
    return directory
