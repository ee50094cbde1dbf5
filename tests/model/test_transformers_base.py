"""model.base: transformers on a tiny Qwen2-VL saved to disk as a user's download would be: adapters where the scope
says, training, greedy generation that stops at the end of a turn, batches equal to their rows alone, adapters saved
and reloaded, and an adapter refused on another base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.adapters.saving import CONFIG_NAME, load_adapter, save_adapter
from rode_lightning.conventions import IGNORE_INDEX
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.transformers_base import TransformersConfig
from rode_lightning.user_errors import UserError
from tests.tiny_vlm import IM_END, save_tiny_qwen2vl, two_conversations as conversations


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))


def build(directory: Path, seed: int = 0, **adapter) -> FoodLMMModule:
    torch.manual_seed(seed)
    module = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(directory), dtype="fp32"),
                           adapter=AdapterConfig(**{"target_modules": ["q_proj", "v_proj"], **adapter}),
                           max_new_tokens=6)
    module.configure_model()
    return module


def test_adapters_stay_in_the_language_model_unless_the_scope_is_the_whole_model(qwen_dir):
    module = build(qwen_dir, target_modules=["all-linear"])
    trainable = list(module.model.trainable_parameters())
    adapters = [name for name in trainable if ".experts." in name or ".router." in name]
    assert adapters and all(name.startswith("hf.model.language_model.layers.") for name in adapters)
    assert not any("lm_head" in name for name in trainable)
    # The connector (Qwen's merger, inside the vision tower) trains with train_projector; the tower's blocks do not.
    assert any(name.startswith("hf.model.visual.merger.") for name in trainable)
    assert not any(name.startswith("hf.model.visual.blocks.") for name in trainable)

    whole = build(qwen_dir, target_modules=["all-linear"], scope="model")
    adapted = whole.model.adapted_modules
    assert any(name.startswith("model.visual.blocks.") for name in adapted)
    assert "lm_head" not in adapted


def test_the_connector_is_frozen_without_train_projector_but_adapters_in_it_train(qwen_dir):
    module = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(qwen_dir), dtype="fp32"),
                           train_projector=False)
    module.configure_model()
    assert not any(name.startswith("hf.model.visual") for name in module.model.trainable_parameters())
    whole = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(qwen_dir), dtype="fp32"),
                          train_projector=False, adapter=AdapterConfig(target_modules=["all-linear"], scope="model"))
    whole.configure_model()
    in_merger = [name for name in whole.model.trainable_parameters() if name.startswith("hf.model.visual.merger.")]
    assert in_merger and all(".experts." in name or ".router." in name for name in in_merger)


def test_labels_cover_the_answer_and_its_end_of_turn_token(qwen_dir):
    module = build(qwen_dir)
    batch = module.conversation_format(conversations())
    im_end = module.tokenizer.convert_tokens_to_ids(IM_END)
    for row in range(2):
        labels = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labels[-1] == im_end
        text = module.tokenizer.decode(labels[:-1])
        assert text.strip() == batch.references[row]
        # the prompt (left-padded) is the whole conversation's prefix
        prompt = batch.prompt_ids[row][batch.prompt_attention_mask[row].bool()].tolist()
        assert batch.input_ids[row][: len(prompt)].tolist() == prompt


def test_rode_trains_with_falling_loss(qwen_dir):
    module = build(qwen_dir)
    batch = module.conversation_format(conversations())
    optimizer = torch.optim.AdamW(module.model.trainable_parameters().values(), lr=2e-2)

    def evaluated_loss() -> float:
        module.model.eval()  # no dropout: the loss of the weights as they are
        with torch.no_grad():
            return module.answer_loss(batch).item()

    losses = [evaluated_loss()]
    for _ in range(3):
        module.model.train()
        for _ in range(3):
            loss = module.answer_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(evaluated_loss())
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.25, losses


def test_a_batch_gives_each_row_what_it_gets_alone(qwen_dir):
    module = build(qwen_dir)
    module.model.eval()
    fmt = module.conversation_format
    together = fmt(conversations())
    logits = module.forward_batch(together)
    answers = module.model.generate_batch(together, 5)
    for row, conversation in enumerate(conversations()):
        alone = fmt([conversation])
        length = int(alone.attention_mask.sum())
        torch.testing.assert_close(module.forward_batch(alone)[0, :length], logits[row, :length],
                                   atol=1e-5, rtol=1e-5)
        generated = module.model.generate_batch(alone, 5)[0].tolist()
        assert answers[row].tolist()[: len(generated)] == generated


def test_generation_is_greedy_and_stops_at_the_end_of_a_turn_whatever_the_generation_config_says(qwen_dir):
    module = build(qwen_dir)
    model = module.model
    model.eval()
    # The model's own config asks for sampling and another eos: neither applies.
    model.hf.generation_config.do_sample, model.hf.generation_config.temperature = True, 5.0
    batch = module.conversation_format(conversations(answers=False))
    first, second = model.generate_batch(batch, 6), model.generate_batch(batch, 6)
    assert torch.equal(first, second)

    im_end = module.tokenizer.convert_tokens_to_ids(IM_END)
    model.hf.generation_config.eos_token_id = module.tokenizer.convert_tokens_to_ids("<|vision_end|>")

    def prefer_end_of_turn(_, __, logits):
        logits = logits.clone()
        logits[..., im_end] += 1e4
        return logits

    handle = model.hf.lm_head.register_forward_hook(prefer_end_of_turn)
    try:
        stopped = model.generate_batch(batch, 6)
    finally:
        handle.remove()
    assert stopped.shape[1] == 1 and stopped[:, 0].tolist() == [im_end, im_end]
    assert module.conversation_format.decode(stopped) == ["", ""]


def test_a_saved_adapter_reloads_with_equal_outputs_and_records_its_base(qwen_dir, tmp_path):
    trained = build(qwen_dir, seed=1)
    with torch.no_grad():
        for parameter in trained.model.trainable_parameters().values():
            parameter.add_(0.05 * torch.randn_like(parameter))
    trained.model.eval()
    batch = trained.conversation_format(conversations())
    expected = trained.forward_batch(batch)
    save_adapter(trained.model, trained.adapter_config, tmp_path / "adapter")
    record = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert record["format_version"] == 2
    assert record["base"]["model_type"] == "qwen2_vl"
    assert record["base"]["architecture"] == "Qwen2VLForConditionalGeneration"
    assert len(record["base"]["config_sha256"]) == 64

    fresh = build(qwen_dir, seed=2)
    fresh.model.eval()
    assert not torch.allclose(fresh.forward_batch(batch), expected)
    load_adapter(fresh.model, fresh.adapter_config, tmp_path / "adapter")
    torch.testing.assert_close(fresh.forward_batch(batch), expected)


def test_an_adapter_trained_on_another_base_is_refused_naming_both(qwen_dir, tmp_path):
    from rode_lightning.model.language import LanguageConfig

    llava = FoodLMMModule(language=LanguageConfig(hidden_size=64, intermediate_size=128, layers=2, heads=4),
                          adapter=AdapterConfig(target_modules=["q_proj", "v_proj"]))
    llava.configure_model()
    save_adapter(llava.model, llava.adapter_config, tmp_path / "llava")
    qwen = build(qwen_dir)
    with pytest.raises(UserError, match=r"LLaVA-1\.5 base.*this model is Qwen2VLForConditionalGeneration"):
        load_adapter(qwen.model, qwen.adapter_config, tmp_path / "llava")
    # and the other way round, an adapter of format version 1 (no base recorded) counts as LLaVA-1.5's
    save_adapter(qwen.model, qwen.adapter_config, tmp_path / "qwen")
    with pytest.raises(UserError, match=r"Qwen2VLForConditionalGeneration.*this model is the LLaVA-1\.5 base"):
        load_adapter(llava.model, llava.adapter_config, tmp_path / "qwen")
    record = json.loads((tmp_path / "llava" / CONFIG_NAME).read_text())
    del record["base"]
    record["format_version"] = 1
    (tmp_path / "llava" / CONFIG_NAME).write_text(json.dumps(record))
    load_adapter(llava.model, llava.adapter_config, tmp_path / "llava")
    with pytest.raises(UserError, match="another base"):
        load_adapter(qwen.model, qwen.adapter_config, tmp_path / "llava")


def test_mistakes_in_the_transformers_config_are_named(tmp_path, qwen_dir):
    with pytest.raises(UserError, match="model.transformers.path: not set"):
        FoodLMMModule(base="transformers").configure_model()
    with pytest.raises(UserError, match=f"model.transformers.path: {tmp_path} has no config.json"):
        FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(tmp_path))).configure_model()
    with pytest.raises(UserError, match="model.base: 'qwen'; expected one of llava, transformers"):
        FoodLMMModule(base="qwen")
    with pytest.raises(UserError, match="min_pixels 5000 is above max_pixels 100"):
        TransformersConfig(min_pixels=5000, max_pixels=100)
    with pytest.raises(UserError, match="end_of_turn: '<nope>' is not a token"):
        FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(qwen_dir), dtype="fp32",
                                                                           end_of_turn="<nope>")).configure_model()
    with pytest.raises(UserError, match="adapter.scope: 'vision'"):
        AdapterConfig(scope="vision")


METHODS = [dict(method="rode"), dict(method="softmax"), dict(method="top1", ranks=[4, 4, 4]),
           dict(method="cluster", ranks=[4, 4], num_clusters=2), dict(method="lora", ranks=[4])]


def clustered(batch):
    batch.cluster_ids = torch.tensor([0, 1])
    return batch


def loss_and_grads(module, batch):
    module.model.zero_grad(set_to_none=True)
    loss = module.answer_loss(batch)
    auxiliary = module.model.auxiliary_loss()
    total = loss + (auxiliary if auxiliary is not None else 0.0)
    total.backward()
    return total.detach(), {name: parameter.grad.clone()
                            for name, parameter in module.model.trainable_parameters().items()
                            if parameter.grad is not None}


@pytest.mark.parametrize("adapter", METHODS, ids=lambda adapter: adapter["method"])
def test_every_method_trains_and_activation_checkpointing_changes_nothing(qwen_dir, adapter):
    module = build(qwen_dir, dropout=0.0, **adapter)
    with torch.no_grad():
        for parameter in module.model.trainable_parameters().values():
            parameter.normal_(std=0.05)
    module.model.train()
    batch = clustered(module.conversation_format(conversations()))
    calls = []
    block = module.model.decoder_blocks()[0]
    block.self_attn.q_proj.register_forward_hook(lambda *args: calls.append(1))
    torch.manual_seed(1)  # MoCLE's gate noise: the same draws in both runs
    plain_loss, plain_grads = loss_and_grads(module, batch)
    assert len(calls) == 1
    adapters = [name for name in plain_grads if "language_model" in name]
    assert adapters and all(plain_grads[name].abs().sum() > 0 for name in adapters if name.endswith("lora_B"))
    module.model.enable_activation_checkpointing()
    torch.manual_seed(1)
    checkpointed_loss, checkpointed_grads = loss_and_grads(module, batch)
    assert len(calls) == 3, "the block was not recomputed: checkpointing is not active"
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    assert checkpointed_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(checkpointed_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


def test_a_bf16_base_trains_fp32_adapters(qwen_dir):
    torch.manual_seed(0)
    module = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(qwen_dir), dtype="bf16"),
                           adapter=AdapterConfig(target_modules=["q_proj", "v_proj"]))
    module.configure_model()
    model = module.model
    assert model.hf.model.language_model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    trainable = model.trainable_parameters()
    # the adapters and the trained connector (Qwen's merger) in fp32, whatever the base's dtype
    assert any("visual.merger" in name for name in trainable)
    assert all(parameter.dtype == torch.float32 for parameter in trainable.values())
    batch = module.conversation_format(conversations())
    logits = module.forward_batch(batch)
    assert logits.dtype == torch.bfloat16
    loss = module.answer_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0
               for name, parameter in trainable.items() if "merger" in name or name.endswith("lora_B"))


def test_compiled_decoder_blocks_give_the_same_logits(qwen_dir):
    module = build(qwen_dir)
    module.model.eval()
    batch = module.conversation_format(conversations())
    eager = module.forward_batch(batch)
    module.model.compile_decoder_blocks("eager")  # torch.compile's graph capture without a C compiler
    from rode_lightning.compat import is_compiled

    assert all(is_compiled(block) for block in module.model.decoder_blocks())
    torch.testing.assert_close(module.forward_batch(batch), eager)


def test_min_and_max_pixels_bound_the_image_tokens_and_the_vocabulary_is_untouched(qwen_dir):
    from tests.tiny_vlm import IMAGE_PAD, MERGE_SIZE, PATCH_SIZE

    token = PATCH_SIZE * MERGE_SIZE  # one image token per 16 x 16 pixels
    counts = {}
    for bounds in ((None, None), (token * token, 2 * token * token)):
        module = FoodLMMModule(base="transformers", transformers=TransformersConfig(
            path=str(qwen_dir), dtype="fp32", min_pixels=bounds[0], max_pixels=bounds[1]))
        batch = module.conversation_format(conversations())
        image_pad = module.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        counts[bounds] = (batch.input_ids == image_pad).sum(dim=1).tolist()
        module.configure_model()
        # no token added, no embedding resized: the vocabulary is the model's as shipped
        assert module.model.hf.get_input_embeddings().weight.shape[0] == module.model.hf.config.text_config.vocab_size
        assert len(module.tokenizer) == 448
    assert counts[(None, None)] == [4, 12]  # 32 x 32 and 64 x 48 at their own size (the processor's 64 x 64 cap)
    assert all(count <= 2 for count in counts[(token * token, 2 * token * token)])


def test_pixel_bounds_on_a_processor_without_them_are_refused(tmp_path):
    from tests.tiny_families import build_tiny_family

    directory = build_tiny_family("llava", tmp_path / "llava")
    module = FoodLMMModule(base="transformers", transformers=TransformersConfig(path=str(directory), dtype="fp32",
                                                                                max_pixels=4096))
    with pytest.raises(UserError, match="has no pixel-area bounds \\(Qwen-VL processors do\\); leave both null"):
        module.processor
