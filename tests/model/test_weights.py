"""Loading real weights from disk: LLaVA directories in both layouts, open_clip vision checkpoints, tokenizers.

Every checkpoint here is a tiny model written to a temporary directory in the naming and file layout of the real
ones (LLaVA v1.5's sharded ``.bin``, llava-hf's sharded safetensors, open_clip's ``visual.*`` state dicts)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.data.tokenizer import load_tokenizer
from rode_lightning.model.language import LanguageConfig, load_language_model
from rode_lightning.model.lmm import FoodLMM
from rode_lightning.model.vision import VisionConfig, VisionEncoder
from rode_lightning.model.llava_weights import inspect_llava_directory

VISION = VisionConfig(image_size=32, patch_size=8, width=32, layers=2, head_width=16)
HIDDEN = 32


# ------------------------------------------------------------------------------------------- writing checkpoints


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    """``with_image``: the demo tokenizer saved (has ``<image>`` and ``<pad>``, like llava-hf's); ``without_image``:
    a small byte-level BPE with ``<unk>``, ``<s>``, ``</s>`` only, like LLaVA v1.5's LLaMA tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tokenizers")
    load_tokenizer("demo").save_pretrained(root / "with_image")
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(["a photo of rice, beans and grilled chicken. ASSISTANT: USER:"] * 5,
                             trainer=trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
                            ).save_pretrained(root / "without_image")
    return {"with_image": root / "with_image", "without_image": root / "without_image"}


def tiny_llama(vocab_size: int, seed: int = 1) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def tiny_projector(seed: int = 2, vision_width: int = VISION.width) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {"0.weight": torch.randn(HIDDEN, vision_width), "0.bias": torch.randn(HIDDEN),
            "2.weight": torch.randn(HIDDEN, HIDDEN), "2.bias": torch.randn(HIDDEN)}


def llama_fields(model: LlamaForCausalLM) -> dict:
    config = model.config
    return {"hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads, "max_position_embeddings": 256,
            "vocab_size": config.vocab_size, "rms_norm_eps": config.rms_norm_eps, "hidden_act": "silu",
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}


def write_llava(directory: Path, model: LlamaForCausalLM, projector: dict, files: str = "bin-sharded",
                drop: tuple[str, ...] = (), replace: dict | None = None) -> Path:
    """The original LLaVA v1.5 repo layout (config.json as LLaVA writes it, a few extra tensors to ignore)."""
    directory.mkdir(parents=True)
    config = {**llama_fields(model), "model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"],
              "mm_hidden_size": projector["0.weight"].shape[1], "mm_projector_type": "mlp2x_gelu",
              "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "mm_vision_tower": "openai/clip-vit-large-patch14-336", "pad_token_id": -1, "max_length": 4096,
              "torch_dtype": "float16", "transformers_version": "4.31.0", "use_cache": True}
    (directory / "config.json").write_text(json.dumps(config))
    tensors = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tensors.update({f"model.mm_projector.{name}": tensor.clone() for name, tensor in projector.items()})
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # transformers 4.31 saved these
    tensors["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(4)
    return write_tensors(directory, tensors, files, drop, replace or {})


def write_llava_hf(directory: Path, model: LlamaForCausalLM, projector: dict, naming: str = "new",
                   files: str = "safetensors-sharded", drop: tuple[str, ...] = (), replace: dict | None = None) -> Path:
    """The transformers ``llava-hf`` layout; ``naming`` ``new`` (transformers >= 4.52) or ``old``."""
    directory.mkdir(parents=True)
    config = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "image_token_index": 4,
              "projector_hidden_act": "gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
              "text_config": {**llama_fields(model), "model_type": "llama"},
              "vision_config": {"model_type": "clip_vision_model", "hidden_size": projector["0.weight"].shape[1]}}
    (directory / "config.json").write_text(json.dumps(config))
    language, head, projection = (("model.language_model.", "lm_head.", "model.multi_modal_projector.")
                                  if naming == "new" else
                                  ("language_model.model.", "language_model.lm_head.", "multi_modal_projector."))
    tensors = {}
    for name, tensor in model.state_dict().items():
        renamed = language + name[len("model."):] if name.startswith("model.") else head + name[len("lm_head."):]
        tensors[renamed] = tensor.clone()
    for name, tensor in projector.items():
        index, kind = name.split(".")
        tensors[f"{projection}linear_{1 if index == '0' else 2}.{kind}"] = tensor.clone()
    vision = "model.vision_tower." if naming == "new" else "vision_tower."
    tensors[vision + "vision_model.embeddings.patch_embedding.weight"] = torch.ones(4, 3, 2, 2)
    return write_tensors(directory, tensors, files, drop, replace or {})


def write_tensors(directory: Path, tensors: dict, files: str, drop, replace) -> Path:
    for name in drop:
        del tensors[name]
    tensors.update(replace)
    names = list(tensors)
    if files == "bin":
        torch.save(tensors, directory / "pytorch_model.bin")
    elif files == "safetensors":
        save_file(tensors, directory / "model.safetensors")
    else:  # two shards and an index, the way save_pretrained writes them
        extension, index_name = (("safetensors", "model.safetensors.index.json") if files == "safetensors-sharded"
                                 else ("bin", "pytorch_model.bin.index.json"))
        stem = "model" if extension == "safetensors" else "pytorch_model"
        halves = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for number, half in enumerate(halves, start=1):
            file = f"{stem}-{number:05d}-of-00002.{extension}"
            shard = {name: tensors[name] for name in half}
            save_file(shard, directory / file) if extension == "safetensors" else torch.save(shard, directory / file)
            weight_map.update({name: file for name in half})
        (directory / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def without_adapters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters of an adapted LLaMA under their plain LLaMA names (``q_proj.base.weight`` -> ``q_proj.weight``)."""
    return {name.replace(".base.", "."): tensor for name, tensor in model.state_dict().items()
            if ".experts." not in name and ".router." not in name}


# ------------------------------------------------------------------------------------------------ LLaVA layouts


@pytest.mark.parametrize("files", ["bin-sharded", "bin", "safetensors-sharded"])
def test_llava_v15_directory_loads_into_food_lmm(tmp_path, tokenizer_dirs, files):
    tokenizer = load_tokenizer(str(tokenizer_dirs["without_image"]))
    vocab = len(tokenizer) - 1  # LLaVA v1.5's vocabulary lacks <image>, which the tokenizer added
    original, projector = tiny_llama(vocab), tiny_projector()
    directory = write_llava(tmp_path / "llava", original, projector, files)
    assert inspect_llava_directory(directory).layout == "llava"

    model = FoodLMM(VISION, LanguageConfig(path=str(directory)), AdapterConfig(), tokenizer, train_projector=False)

    loaded = without_adapters(model.language_model)
    for name, tensor in original.state_dict().items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(loaded[name][:vocab], tensor), name
            # the added <image> row starts at the mean of the checkpoint's rows
            torch.testing.assert_close(loaded[name][vocab], tensor.mean(dim=0))
        else:
            assert torch.equal(loaded[name], tensor), name
    assert model.language_model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.image_token_id == vocab
    for name, tensor in projector.items():
        assert torch.equal(model.projector.layers.state_dict()[name], tensor), name
    assert not any(p.requires_grad for p in model.projector.parameters())  # train_projector false: frozen
    assert not any(p.requires_grad for n, p in model.language_model.named_parameters() if "embed" in n or "head" in n)

    input_ids = torch.randint(5, vocab, (2, 6 + model.num_image_tokens))
    input_ids[:, 2:2 + model.num_image_tokens] = model.image_token_id
    logits = model(input_ids, torch.ones_like(input_ids), torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, input_ids.shape[1], len(tokenizer)) and torch.isfinite(logits).all()
    new_tokens = model.generate(input_ids, torch.ones_like(input_ids), torch.randn(2, 3, 32, 32), max_new_tokens=3)
    assert new_tokens.shape[0] == 2


@pytest.mark.parametrize("naming,files", [("new", "safetensors-sharded"), ("old", "safetensors")])
def test_llava_hf_directory_gives_the_saved_model(tmp_path, tokenizer_dirs, naming, files):
    tokenizer = load_tokenizer(str(tokenizer_dirs["with_image"]))
    original, projector = tiny_llama(len(tokenizer)), tiny_projector()
    directory = write_llava_hf(tmp_path / "hf", original, projector, naming, files)
    assert inspect_llava_directory(directory).layout == "llava-hf"

    language_model, weights = load_language_model(LanguageConfig(path=str(directory)), len(tokenizer), VISION.width)

    assert language_model.get_input_embeddings().weight.device.type == "cpu"
    for name, tensor in original.state_dict().items():
        assert torch.equal(language_model.state_dict()[name], tensor), name
    assert set(weights.state) == {f"layers.{name}" for name in projector}
    for name, tensor in projector.items():
        assert torch.equal(weights.state[f"layers.{name}"], tensor), name
    input_ids = torch.randint(0, len(tokenizer), (2, 10))
    with torch.no_grad():
        assert torch.equal(language_model(input_ids).logits, original(input_ids).logits)


def test_llava_hf_padded_vocabulary_is_cut_to_the_tokenizer(tmp_path, tokenizer_dirs):
    """llava-hf pads its vocabulary to a multiple of 64; the rows beyond the tokenizer belong to no token."""
    tokenizer = load_tokenizer(str(tokenizer_dirs["with_image"]))
    padded = (len(tokenizer) // 64 + 1) * 64
    original = tiny_llama(padded)
    directory = write_llava_hf(tmp_path / "hf", original, tiny_projector())
    model = FoodLMM(VISION, LanguageConfig(path=str(directory)), AdapterConfig(), tokenizer, train_projector=True)
    embedding = model.language_model.get_input_embeddings().weight
    assert embedding.shape[0] == len(tokenizer) == model.language_model.config.vocab_size
    assert torch.equal(embedding, original.model.embed_tokens.weight[: len(tokenizer)])
    assert all(p.requires_grad for p in model.projector.parameters())
    input_ids = torch.randint(0, len(tokenizer), (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.language_model(input_ids).logits,
                                   original(input_ids).logits[..., : len(tokenizer)], rtol=1e-5, atol=1e-6)


def test_bf16_loading(tmp_path, tokenizer_dirs):
    tokenizer = load_tokenizer(str(tokenizer_dirs["with_image"]))
    original = tiny_llama(len(tokenizer))
    directory = write_llava_hf(tmp_path / "hf", original, tiny_projector())
    model, weights = load_language_model(LanguageConfig(path=str(directory), dtype="bf16"), len(tokenizer))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight,
                       original.model.layers[1].mlp.down_proj.weight.to(torch.bfloat16))
    assert weights.state["layers.0.weight"].dtype == torch.float32  # the projector stays fp32


# ------------------------------------------------------------------------------------------------------ errors


def test_missing_path_no_config_and_unknown_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_language_model(LanguageConfig(path=str(tmp_path / "nowhere")), 100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_language_model(LanguageConfig(path=str(tmp_path / "empty")), 100)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(ValueError, match=r"config.json: unknown layout \(model_type 'mistral'\)"):
        load_language_model(LanguageConfig(path=str(tmp_path / "other")), 100)


@pytest.mark.parametrize("files", ["bin-sharded", "safetensors-sharded"])
def test_shape_mismatch_names_file_and_tensor(tmp_path, files):
    original = tiny_llama(300)
    name = "model.layers.1.mlp.down_proj.weight"
    directory = write_llava(tmp_path / "llava", original, tiny_projector(), files,
                            replace={name: torch.zeros(HIDDEN, 48)})
    with pytest.raises(ValueError) as error:
        load_language_model(LanguageConfig(path=str(directory)), 301)
    message = str(error.value)
    assert re.search(r"-0000[12]-of-00002\.(bin|safetensors): tensor " + re.escape(name), message), message
    assert "(32, 48)" in message and "expects (32, 64)" in message


def test_projector_shape_mismatch_names_file_and_tensor(tmp_path):
    directory = write_llava_hf(tmp_path / "hf", tiny_llama(300), tiny_projector(), files="safetensors",
                               replace={"model.multi_modal_projector.linear_2.weight": torch.zeros(HIDDEN, 16)})
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor model\.multi_modal_projector\.linear_2\.weight "
                                         r"has shape \(32, 16\) but .* expects \(32, 32\)"):
        load_language_model(LanguageConfig(path=str(directory)), 300)


@pytest.mark.parametrize("files", ["safetensors-sharded", "bin"])
def test_missing_tensor_is_named(tmp_path, files):
    """Found from the index before reading weights, or after reading a single .bin."""
    name = "model.layers.1.mlp.up_proj.weight"
    directory = write_llava(tmp_path / "llava", tiny_llama(300), tiny_projector(), files, drop=(name,))
    with pytest.raises(ValueError, match=r"llava layout\): missing tensors .*" + re.escape(name)):
        load_language_model(LanguageConfig(path=str(directory)), 301)
    directory = write_llava(tmp_path / "no_projector", tiny_llama(300), tiny_projector(), files,
                            drop=("model.mm_projector.2.bias",))
    with pytest.raises(ValueError, match=r"missing projector tensors: model\.mm_projector\.2\.bias"):
        load_language_model(LanguageConfig(path=str(directory)), 301)


def test_vision_width_must_match_the_projector_input(tmp_path, tokenizer_dirs):
    tokenizer = load_tokenizer(str(tokenizer_dirs["with_image"]))
    directory = write_llava_hf(tmp_path / "hf", tiny_llama(len(tokenizer)), tiny_projector(vision_width=48))
    with pytest.raises(ValueError, match=r"model\.vision width 32 does not match the projector input width 48"):
        FoodLMM(VISION, LanguageConfig(path=str(directory)), AdapterConfig(), tokenizer)


def test_a_tokenizer_of_another_model_is_refused(tmp_path, tokenizer_dirs):
    directory = write_llava_hf(tmp_path / "hf", tiny_llama(32000), tiny_projector())
    with pytest.raises(ValueError, match="model.tokenizer must be the tokenizer of model.language.path"):
        load_language_model(LanguageConfig(path=str(directory)), 1200)


# ---------------------------------------------------------------------------------------------------- tokenizer


def test_local_tokenizers_get_image_and_pad_tokens(tokenizer_dirs):
    plain = PreTrainedTokenizerFast.from_pretrained(tokenizer_dirs["without_image"])
    tokenizer = load_tokenizer(str(tokenizer_dirs["without_image"]))
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == len(plain) and len(tokenizer) == len(plain) + 1  # one new special token, at the end
    assert tokenizer("rice <image> beans", add_special_tokens=False).input_ids.count(image_id) == 1
    assert tokenizer.pad_token == "<unk>"  # LLaVA v1.5's choice: no new row for padding
    demo, saved = load_tokenizer("demo"), load_tokenizer(str(tokenizer_dirs["with_image"]))
    assert len(saved) == len(demo) and saved.convert_tokens_to_ids("<image>") == demo.convert_tokens_to_ids("<image>")
    assert saved.pad_token_id == demo.pad_token_id
    assert load_tokenizer("demo") is demo  # cached


def test_a_directory_without_tokenizer_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path))


# ---------------------------------------------------------------------------------------------- open_clip vision


def visual_state(encoder: VisionEncoder) -> dict[str, torch.Tensor]:
    """open_clip naming: the tower under ``visual.``, beside text-tower tensors that must be ignored."""
    return {**{f"visual.{name}": tensor.clone() for name, tensor in encoder.tower.state_dict().items()},
            "token_embedding.weight": torch.zeros(10, 4), "logit_scale": torch.tensor(4.6)}


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_open_clip_checkpoint_loads_into_the_tower(tmp_path, suffix):
    torch.manual_seed(3)
    saved = VisionEncoder(VISION).eval()
    path = tmp_path / f"open_clip_pytorch_model{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(visual_state(saved), path)
    torch.manual_seed(4)
    loaded = VisionEncoder(VisionConfig(**{**VISION.__dict__, "checkpoint": str(path)})).eval()
    for name, tensor in saved.tower.state_dict().items():
        assert torch.equal(loaded.tower.state_dict()[name], tensor), name
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), saved(images))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_openai_torchscript_archive_loads(tmp_path):
    torch.manual_seed(3)
    saved = VisionEncoder(VISION).eval()

    class Clip(nn.Module):  # what OpenAI's ViT-L-14-336px.pt is: a scripted CLIP whose tower is `visual`
        def __init__(self):
            super().__init__()
            self.visual = saved.tower

        def forward(self, images):
            return self.visual(images)

    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.trace(Clip().eval(), torch.randn(1, 3, 32, 32), check_trace=False), str(path))
    loaded = VisionEncoder(VisionConfig(**{**VISION.__dict__, "checkpoint": str(path)})).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), saved(images))


def test_open_clip_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VisionEncoder(VisionConfig(**{**VISION.__dict__, "checkpoint": str(tmp_path / "missing.bin")}))
    state = visual_state(VisionEncoder(VISION))
    bad = tmp_path / "bad.bin"
    torch.save({**state, "visual.ln_pre.weight": torch.ones(33)}, bad)
    with pytest.raises(ValueError, match=r"bad\.bin: tensor visual\.ln_pre\.weight has shape \(33,\) but .* "
                                         r"expects \(32,\)"):
        VisionEncoder(VisionConfig(**{**VISION.__dict__, "checkpoint": str(bad)}))
    partial = tmp_path / "partial.bin"
    torch.save({name: tensor for name, tensor in state.items() if name != "visual.proj"}, partial)
    with pytest.raises(ValueError, match=r"missing tensors: visual\.proj; unexpected tensors: none"):
        VisionEncoder(VisionConfig(**{**VISION.__dict__, "checkpoint": str(partial)}))


def test_the_vit_l_14_336_tower_has_open_clip_s_own_tensors():
    """Our preset tower and the ``visual`` of open_clip's own ViT-L-14-336 CLIP hold the same tensors (names and
    shapes), so the real checkpoint loads whole; built on the meta device, nothing is allocated."""
    import open_clip
    from open_clip.model import CLIP
    from open_clip.transformer import QuickGELU

    config = VisionConfig(preset="ViT-L-14-336")
    with torch.device("meta"):
        ours = VisionEncoder(config)
        theirs = CLIP(**open_clip.get_model_config("ViT-L-14-336"), quick_gelu=True).visual
    assert {n: t.shape for n, t in ours.tower.state_dict().items()} == {
        n: t.shape for n, t in theirs.state_dict().items()}
    assert config.num_patches == 576 and ours.output_dim == 1024
    assert any(isinstance(module, QuickGELU) for module in ours.modules())  # OpenAI's weights were trained with it
