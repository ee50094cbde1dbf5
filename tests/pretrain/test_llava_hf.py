"""The demo base as a llava-hf directory (pretrain/llava_hf.py): both bases give the same ids, labels and logits on the
same conversations, it is converted once per build of the base, and ``demo-base-hf`` resolves to it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from rode_lightning.adapters.config import AdapterConfig
from rode_lightning.data.conversation import single_turn
from rode_lightning.model.language import LanguageConfig
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.model.transformers_base import TransformersConfig
from rode_lightning.pretrain.build import vision_config
from rode_lightning.pretrain.llava_hf import SOURCE_RECORD, demo_base_hf
from tests.pretrain.conftest import TINY

ADAPTER = AdapterConfig(target_modules=["q_proj", "v_proj", "down_proj"], dropout=0.0)


def conversations():
    return [single_turn(Image.new("RGB", (64, 64), (200, 40, 40)), "Which ingredients are in this dish?",
                        "rice, chicken, onion", id="a", dataset="unifood", task="ingredients"),
            single_turn(Image.new("RGB", (90, 64), (20, 140, 40)), "What dish is this?", "ramen with 12 g of egg",
                        id="b", dataset="unifood", task="category")]


def both_bases(tiny_base, directory: Path) -> tuple[FoodLMMModule, FoodLMMModule]:
    llava = FoodLMMModule(vision=vision_config(TINY, str(tiny_base.vision_checkpoint)),
                          language=LanguageConfig(path=str(tiny_base.llava)), tokenizer=str(tiny_base.llava),
                          adapter=ADAPTER, max_new_tokens=8)
    transformers = FoodLMMModule(base="transformers", adapter=ADAPTER, max_new_tokens=8,
                                 transformers=TransformersConfig(path=str(directory), dtype="fp32", end_of_turn="</s>"))
    for module in (llava, transformers):
        module.configure_model()
    # The same non-zero adapters in both, matched by their names inside the decoder ("layers.N...."), so that the
    # adapters' arithmetic is compared too, not only the frozen weights.
    generator = torch.Generator().manual_seed(0)
    def adapters(module: FoodLMMModule) -> dict[str, torch.nn.Parameter]:
        return {name[name.index("layers."):]: parameter
                for name, parameter in module.model.trainable_parameters().items()
                if ".experts." in name or ".router." in name}

    llava_adapters, hf_adapters = adapters(llava), adapters(transformers)
    assert llava_adapters.keys() == hf_adapters.keys() and llava_adapters
    with torch.no_grad():
        for name in sorted(llava_adapters):
            values = 0.05 * torch.randn(llava_adapters[name].shape, generator=generator)
            llava_adapters[name].copy_(values)
            hf_adapters[name].copy_(values)
    return llava.eval(), transformers.eval()


def test_both_bases_give_the_same_ids_labels_and_logits(tiny_base, tmp_path):
    directory = demo_base_hf(tiny_base.root.parent, TINY)
    llava, transformers = both_bases(tiny_base, directory)
    ours, theirs = llava.conversation_format(conversations()), transformers.conversation_format(conversations())
    for field in ("input_ids", "attention_mask", "labels", "prompt_ids", "prompt_attention_mask", "image_mask"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field
    torch.testing.assert_close(theirs.pixel_values, ours.pixel_values, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(transformers.forward_batch(theirs), llava.forward_batch(ours),
                                   atol=1e-5, rtol=1e-5)
    assert transformers.generate_answers(theirs) == llava.generate_answers(ours)


def test_the_conversion_runs_once_per_build_of_the_base(tiny_base, tmp_path):
    first = demo_base_hf(tiny_base.root.parent, TINY)
    written = (first / "model.safetensors").stat().st_mtime_ns
    assert demo_base_hf(tiny_base.root.parent, TINY) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == written  # kept, not converted again
    record = json.loads((first / SOURCE_RECORD).read_text())
    record["build_record_sha256"] = "another build"
    (first / SOURCE_RECORD).write_text(json.dumps(record))
    torch.manual_seed(0)
    demo_base_hf(tiny_base.root.parent, TINY)
    drawn_after_converting = torch.rand(3)
    assert json.loads((first / SOURCE_RECORD).read_text())["build_record_sha256"] != "another build"
    # A run that converts on first use draws the same random numbers afterwards as one that finds it converted.
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn_after_converting)


def test_cli_resolves_demo_base_hf(tiny_base, monkeypatch):
    from rode_lightning import cli

    calls = []
    monkeypatch.setattr(cli, "demo_base_hf", lambda demo_dir: calls.append(demo_dir) or Path("/converted"))
    config = {"model.transformers.path": "demo-base-hf", "data.demo_dir": "/demo"}
    cli.resolve_demo_base(config)
    assert calls == ["/demo"] and config["model.transformers.path"] == "/converted"
