"""The demo base as a llava-hf directory, so that the demo also runs through ``model.base: transformers``.

The demo base (``build.py``) is released in LLaVA-1.5's own layouts: an open_clip checkpoint and a LLaVA v1.5
directory, which the ``llava`` base loads. This writes the same weights as transformers' ``LlavaForConditionalGeneration``
with its ``LlavaProcessor``: the open_clip tower as a ``CLIPVisionModel`` (QuickGELU, features of the penultimate
block, the class token dropped: ``vision_feature_layer -2``, ``vision_feature_select_strategy default``), the
projector as ``multi_modal_projector``, the LLaMA as its language model, the demo tokenizer, CLIP's preprocessing at
the tower's input size, and a chat template that spells LLaVA-1.5's conversation (``model/formats/llava.py``) token for
token. Both paths then give the same ids, labels and logits on the same conversations (tests/pretrain).

The directory is written beside the base (``<demo dir>/base-hf``), keyed by the base's build record: it is
rewritten when the base was rebuilt, never the other way round (the base's recipe, and every demo figure, stay).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from filelock import FileLock

from rode_lightning.atomic import write_json_atomically
from rode_lightning.conventions import IMAGE_PLACEHOLDER, SYSTEM_PROMPT
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.language import LanguageConfig, load_language_model
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.vision import VisionEncoder
from rode_lightning.pretrain.build import DemoBase, build_demo_base, random_state_kept, vision_config
from rode_lightning.pretrain.recipe import BaseRecipe

DEMO_BASE_HF = "demo-base-hf"
"""The value of ``model.transformers.path`` that names the demo base's llava-hf copy; the CLI resolves it (building
the base and converting it on first use)."""
HF_DIRECTORY = "base-hf"
SOURCE_RECORD = "source.json"

# LLaVA-1.5's conversation (model/formats/llava.py): "<s>SYSTEM USER: <image>\nQUESTION ASSISTANT: ANSWER</s>", later
# turns "USER: QUESTION ASSISTANT: ANSWER</s>"; the processor repeats <image> once per patch.
CHAT_TEMPLATE = (
    "{{ bos_token }}" + SYSTEM_PROMPT + " "
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}" + IMAGE_PLACEHOLDER + "{{ '\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} ASSISTANT:"
    "{% else %} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def demo_base_hf(demo_dir: str | Path, recipe: BaseRecipe = BaseRecipe()) -> Path:
    """``<demo dir>/base-hf``: the demo base (built first if needed) as a llava-hf directory, converted unless it
    is already there for this base's build record."""
    base = build_demo_base(Path(demo_dir).expanduser() / "base", recipe)
    target = base.root.with_name(HF_DIRECTORY)
    key = _build_key(base)
    with FileLock(str(target) + ".lock"):
        if _converted_from(target) == key:
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            # Building the parts draws random initial weights (then overwritten): the caller's random state (a run
            # seeded by seed_everything, which then builds its model) must not depend on whether it was converted.
            with random_state_kept():
                convert_to_llava_hf(base, recipe, partial)
            write_json_atomically(partial / SOURCE_RECORD, {"base": str(base.root), "build_record_sha256": key},
                                  indent=2)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def _build_key(base: DemoBase) -> str:
    return hashlib.sha256(base.record.read_bytes()).hexdigest()


def _converted_from(target: Path) -> str | None:
    try:
        return json.loads((target / SOURCE_RECORD).read_text()).get("build_record_sha256")
    except (OSError, ValueError):
        return None


def convert_to_llava_hf(base: DemoBase, recipe: BaseRecipe, directory: Path) -> Path:
    """Write ``base`` as a llava-hf model and processor into ``directory``."""
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = load_tokenizer(str(base.llava))
    vision = VisionEncoder(vision_config(recipe, str(base.vision_checkpoint)))
    language_model, projector_weights = load_language_model(LanguageConfig(path=str(base.llava)), len(tokenizer),
                                                            vision.output_dim)
    projector = MLPProjector(vision.output_dim, language_model.config.hidden_size)
    projector_weights.load_into(projector, vision_width=vision.output_dim)

    config = llava_hf_config(vision, language_model.config, tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    state = {**_vision_tensors(vision), **_projector_tensors(projector),
             **{f"model.language_model.{name.removeprefix('model.')}": tensor
                for name, tensor in language_model.state_dict().items() if name.startswith("model.")},
             "lm_head.weight": language_model.lm_head.weight}
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise RuntimeError(f"llava-hf conversion left tensors unset: {sorted(missing)[:5]}")
    model.load_state_dict({name: tensor.detach().clone().contiguous() for name, tensor in state.items()},
                          strict=True, assign=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(directory)

    size = vision.config.image_size
    # open_clip's evaluation transform (model/formats/llava.py): bicubic resize of the short side, centre crop,
    # CLIP's normalisation.
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                         resample=3, do_convert_rgb=True)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vision.config.patch_size, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, image_token=IMAGE_PLACEHOLDER,
                               chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(directory)
    return directory


def llava_hf_config(vision: VisionEncoder, text_config, image_token_id: int):
    from transformers import CLIPVisionConfig, LlavaConfig

    shape = vision.config
    vision_config = CLIPVisionConfig(
        hidden_size=shape.width, intermediate_size=int(vision.tower.transformer.resblocks[0].mlp.c_fc.out_features),
        num_hidden_layers=shape.layers, num_attention_heads=shape.width // shape.head_width,
        image_size=shape.image_size, patch_size=shape.patch_size, hidden_act="quick_gelu" if shape.quick_gelu else "gelu",
        layer_norm_eps=1e-5, projection_dim=shape.width)
    text = text_config.to_dict()
    for key in ("architectures", "dtype", "torch_dtype", "_name_or_path", "transformers_version"):
        text.pop(key, None)
    return LlavaConfig(vision_config=vision_config.to_dict(), text_config=text, image_token_id=image_token_id,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", multimodal_projector_bias=True,
                       image_seq_length=shape.num_patches, tie_word_embeddings=False)


def _vision_tensors(vision: VisionEncoder) -> dict[str, torch.Tensor]:
    """open_clip's ``VisionTransformer`` tensors under ``CLIPVisionModel``'s names (the fused attention input
    projection split into q, k, v)."""
    tower = vision.tower.state_dict()
    prefix = "model.vision_tower."
    tensors = {
        f"{prefix}embeddings.patch_embedding.weight": tower["conv1.weight"],
        f"{prefix}embeddings.class_embedding": tower["class_embedding"],
        f"{prefix}embeddings.position_embedding.weight": tower["positional_embedding"],
        f"{prefix}pre_layrnorm.weight": tower["ln_pre.weight"], f"{prefix}pre_layrnorm.bias": tower["ln_pre.bias"],
        f"{prefix}post_layernorm.weight": tower["ln_post.weight"],
        f"{prefix}post_layernorm.bias": tower["ln_post.bias"],
    }
    for index in range(vision.config.layers):
        source, target = f"transformer.resblocks.{index}.", f"{prefix}encoder.layers.{index}."
        query, key, value = tower[source + "attn.in_proj_weight"].chunk(3)
        query_bias, key_bias, value_bias = tower[source + "attn.in_proj_bias"].chunk(3)
        tensors.update({
            target + "self_attn.q_proj.weight": query, target + "self_attn.q_proj.bias": query_bias,
            target + "self_attn.k_proj.weight": key, target + "self_attn.k_proj.bias": key_bias,
            target + "self_attn.v_proj.weight": value, target + "self_attn.v_proj.bias": value_bias,
            target + "self_attn.out_proj.weight": tower[source + "attn.out_proj.weight"],
            target + "self_attn.out_proj.bias": tower[source + "attn.out_proj.bias"],
            target + "layer_norm1.weight": tower[source + "ln_1.weight"],
            target + "layer_norm1.bias": tower[source + "ln_1.bias"],
            target + "layer_norm2.weight": tower[source + "ln_2.weight"],
            target + "layer_norm2.bias": tower[source + "ln_2.bias"],
            target + "mlp.fc1.weight": tower[source + "mlp.c_fc.weight"],
            target + "mlp.fc1.bias": tower[source + "mlp.c_fc.bias"],
            target + "mlp.fc2.weight": tower[source + "mlp.c_proj.weight"],
            target + "mlp.fc2.bias": tower[source + "mlp.c_proj.bias"],
        })
    return tensors


def _projector_tensors(projector: MLPProjector) -> dict[str, torch.Tensor]:
    first, second = projector.layers[0], projector.layers[2]
    return {"model.multi_modal_projector.linear_1.weight": first.weight,
            "model.multi_modal_projector.linear_1.bias": first.bias,
            "model.multi_modal_projector.linear_2.weight": second.weight,
            "model.multi_modal_projector.linear_2.bias": second.bias}
