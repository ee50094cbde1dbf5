"""``export`` and ``merge`` of a plain LoRA trained here (``fit`` on a tiny Qwen2-VL): the export is peft's own format
(``PeftModel.from_pretrained`` gives this package's logits; the file's names and the config are those peft's own
``save_pretrained`` writes for the same ``LoraConfig``), the merged model loads with ``AutoModelForImageTextToText``
and gives the same logits, and what cannot be written is refused in one ``error:`` line."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rode_lightning.cli import build_module, main, parse_fit_arguments, run_command_line, saved_run_arguments
from rode_lightning.export import check_exportable, peft_target_modules
from rode_lightning.user_errors import ExistingFileError, UserError
from tests.conftest import tiny_cli_args
from tests.tiny_vlm import IM_END, save_tiny_qwen2vl, two_conversations

CONFIGS = Path(__file__).parents[1] / "configs"
RANK, ALPHA, DROPOUT = 4, 8, 0.1


@dataclass
class LoraRun:
    base: Path  # the tiny Qwen2-VL directory
    adapter: Path  # <run>/adapter, in this package's format
    config: Path  # <run>/config.yaml, saved by fit


@dataclass
class Adapted:
    """This package's adapted model on one batch: its inputs to the transformers model, and its logits."""

    module: object
    inputs: dict
    logits: torch.Tensor


@pytest.fixture(scope="module")
def lora_run(cli_demo_dir, tmp_path_factory) -> LoraRun:
    base = save_tiny_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))
    logs = tmp_path_factory.mktemp("export_runs")
    main(["fit", *tiny_cli_args(
        cli_demo_dir, logs, "--model.base", "transformers", "--model.transformers.path", str(base),
        "--model.transformers.dtype", "fp32", "--model.transformers.end_of_turn", IM_END,
        "--model.adapter.method", "lora", "--model.adapter.ranks", f"[{RANK}]", "--model.adapter.alpha", str(ALPHA),
        "--model.adapter.dropout", str(DROPOUT), "--model.adapter.target_modules", "[q_proj, v_proj]",
        "--trainer.limit_train_batches", "1", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0")])
    run = logs / "demo" / "version_0"
    # One step barely moves lora_B from its zeros: values that change the logits (LoRA's and the trained connector's),
    # so that equal logits below say something.
    weights = run / "adapter" / "adapter.safetensors"
    generator = torch.Generator().manual_seed(1)
    state = {name: tensor + 0.3 * torch.randn(tensor.shape, generator=generator)
             if "lora_B" in name or ".merger." in name else tensor for name, tensor in load_file(weights).items()}
    save_file(state, weights)
    return LoraRun(base, run / "adapter", run / "config.yaml")


@pytest.fixture(scope="module")
def adapted(lora_run) -> Adapted:
    module = build_module(saved_run_arguments(str(lora_run.adapter)))
    module.configure_model()
    module.model.eval()
    batch = module.conversation_format(two_conversations())
    with torch.no_grad():
        logits = module.forward_batch(batch)
    return Adapted(module, module.model._inputs(batch.input_ids, batch.attention_mask, batch), logits)


def _base_model(directory: Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32).eval()


def _logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def test_export_writes_peft_own_files_that_give_this_package_logits(lora_run, adapted, tmp_path, capsys):
    from peft import LoraConfig, PeftModel, get_peft_model

    output = tmp_path / "peft"
    with pytest.warns(UserWarning, match="vLLM's LoRA loader takes LoRA weights only"):
        run_command_line(["export", "--model.adapter_path", str(lora_run.adapter), "--output", str(output)])
    assert f"export: wrote {output}" in capsys.readouterr().out
    config = json.loads((output / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["lora_dropout"], config["bias"],
            config["task_type"]) == ("LORA", RANK, ALPHA, DROPOUT, "none", None)
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["modules_to_save"] == ["model.visual.merger"]  # the connector trained (train_projector: true)
    assert config["base_model_name_or_path"] == str(lora_run.base.resolve())

    base = _base_model(lora_run.base)
    bare = _logits(base, adapted.inputs)
    loaded = PeftModel.from_pretrained(base, output).eval()
    torch.testing.assert_close(_logits(loaded, adapted.inputs), adapted.logits, atol=1e-5, rtol=1e-5)
    assert (adapted.logits - bare).abs().max() > 0.05  # the LoRA and the connector change the logits

    # peft writing the same LoraConfig on the same base itself: the same tensor names and shapes, the same config
    own_dir = tmp_path / "peft_own"
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "bias")
    own = get_peft_model(_base_model(lora_run.base), LoraConfig(**{key: config[key] for key in keys}))
    own.save_pretrained(own_dir)
    shapes = [{name: tensor.shape for name, tensor in load_file(folder / "adapter_model.safetensors").items()}
              for folder in (output, own_dir)]
    assert shapes[0] == shapes[1]
    exported = shapes[0]
    assert "base_model.model.model.language_model.layers.1.self_attn.v_proj.lora_B.weight" in exported
    own_config = json.loads((own_dir / "adapter_config.json").read_text())
    for record in (config, own_config):
        record["target_modules"] = sorted(record["target_modules"])
        record.pop("base_model_name_or_path")  # peft's: the path as the base was loaded; the export's: resolved
    assert config == own_config
    assert sorted(path.name for path in output.iterdir()) == sorted(path.name for path in own_dir.iterdir())


def test_an_export_without_a_trained_connector_holds_lora_weights_only(lora_run, tmp_path, capsys):
    """What vLLM's LoRA loader takes (``vllm/lora/lora_model.py``, ``peft_helper.py``): no modules_to_save, and
    every tensor ``base_model.model.<module>.lora_A|lora_B.weight``."""
    adapter = tmp_path / "run" / "adapter"  # the same LoRA as trained with model.train_projector: false
    adapter.mkdir(parents=True)
    weights = load_file(lora_run.adapter / "adapter.safetensors")
    save_file({name: tensor for name, tensor in weights.items() if ".lora_" in name}, adapter / "adapter.safetensors")
    shutil.copy(lora_run.adapter / "adapter_config.json", adapter)
    output = tmp_path / "for_vllm"
    output.mkdir()  # an empty folder is written into
    run_command_line(["export", "--config", str(lora_run.config), "--model.train_projector", "false",
                      "--model.adapter_path", str(adapter), "--output", str(output)])
    assert f"--enable-lora --max-lora-rank 8 --lora-modules NAME={output}" in capsys.readouterr().out  # vLLM's >= 4
    assert json.loads((output / "adapter_config.json").read_text())["modules_to_save"] is None
    names = list(load_file(output / "adapter_model.safetensors"))
    assert len(names) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B)
    pattern = r"base_model\.model\.model\.language_model\.layers\.[01]\.self_attn\.[qv]_proj\.lora_[AB]\.weight"
    assert all(re.fullmatch(pattern, name) for name in names), names


def test_merge_writes_a_transformers_model_with_the_adapted_logits(lora_run, adapted, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    output = tmp_path / "merged"
    run_command_line(["merge", "--model.adapter_path", str(lora_run.adapter), "--output", str(output)])
    assert f"merge: wrote {output}" in capsys.readouterr().out
    merged = AutoModelForImageTextToText.from_pretrained(output).eval()
    assert merged.dtype == torch.float32 and not any("lora" in name for name in merged.state_dict())
    torch.testing.assert_close(_logits(merged, adapted.inputs), adapted.logits, atol=1e-4, rtol=1e-4)
    processor = AutoProcessor.from_pretrained(output)
    conversation = [{"role": "user", "content": [{"type": "text", "text": "What dish is this?"}]}]
    assert processor.apply_chat_template(conversation) == adapted.module.processor.apply_chat_template(conversation)


def test_target_modules_are_the_run_entries_only_where_peft_matches_exactly_the_trained_layers():
    """A ``q_proj`` entry trained in the language model only (``adapter.scope: language_model``) would reach a
    vision tower's ``q_proj`` too in peft, which matches over the whole model: the export then names each layer."""
    from torch import nn

    model = nn.Module()
    model.vision, model.language = nn.Module(), nn.Module()
    model.vision.q_proj = nn.Linear(4, 4)
    model.language.layers = nn.ModuleList([nn.Module()])
    model.language.layers[0].q_proj = nn.Linear(4, 4)
    trained = {"language.layers.0.q_proj"}
    assert peft_target_modules(model, ["layers.0.q_proj"], trained, []) == ["layers.0.q_proj"]
    assert peft_target_modules(model, ["q_proj"], trained, []) == ["language.layers.0.q_proj"]
    assert peft_target_modules(model, [r"re:.*layers\.\d+\.q_proj"], trained, []) == ["language.layers.0.q_proj"]
    # a trained connector is peft's modules_to_save, which peft never adapts: its q_proj does not count
    assert peft_target_modules(model, ["q_proj"], trained, ["vision"]) == ["q_proj"]


def _refused(args: list[str], capsys) -> str:
    """The one line a refused command prints, without the traceback hint every ``error:`` line ends with."""
    with pytest.raises(SystemExit) as exit:
        run_command_line(args)
    assert exit.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    return line.removesuffix(" (RODE_TRACEBACK=1 shows the traceback)")


def _transformers_args(*extra: str) -> list[str]:
    """A transformers-base configuration, parsed only (``demo-base-hf`` is not built)."""
    return ["--config", str(CONFIGS / "demo.yaml"), "--config", str(CONFIGS / "demo_transformers.yaml"), *extra]


@pytest.fixture(scope="module")
def lora_config():
    """A parsed plain-LoRA configuration on the transformers base, for the checks that need no command line."""
    return parse_fit_arguments(_transformers_args("--model.adapter.method", "lora", "--model.adapter.ranks", "[8]",
                                                  "--model.adapter_path", "run/adapter"))


def _changed(config, **values):
    changed = config.clone()
    for key, value in values.items():
        changed[key.replace("__", ".")] = value
    return changed


def test_a_mixture_of_experts_is_refused_in_one_line(tmp_path, capsys, lora_config):
    line = _refused(["export", *_transformers_args("--model.adapter.method", "rode"), "--model.adapter_path",
                     str(tmp_path), "--output", str(tmp_path / "out")], capsys)
    assert line == ("error: export: adapter method 'rode' mixes LoRA experts with a router that weighs them anew for "
                    "every token, so there is no single LoRA to write: routed experts cannot be merged into the "
                    "weights or served as one peft or vLLM LoRA; only method 'lora' exports (serve this adapter with "
                    "python -m rode_lightning serve)")
    assert not (tmp_path / "out").exists()
    for command, method in [("merge", "softmax"), ("export", "top1"), ("merge", "cluster")]:
        with pytest.raises(UserError) as refused:
            check_exportable(command, _changed(lora_config, model__adapter__method=method), tmp_path / "out")
        assert str(refused.value).startswith(f"{command}: adapter method '{method}' mixes LoRA experts")
        assert ("by its instruction cluster" if method == "cluster" else "for every token") in str(refused.value)


def test_the_llava_base_is_refused_with_what_to_train_instead(tmp_path, capsys, lora_config):
    line = _refused(["export", "--config", str(CONFIGS / "demo.yaml"), "--model.adapter_path", str(tmp_path),
                     "--output", str(tmp_path / "out")], capsys)
    assert line == ("error: export: model.base is llava, this package's own LLaVA-1.5 model class (an open_clip "
                    "tower, a projector and a LLaMA), not a transformers model that peft or vLLM could load; train on "
                    "model.base: transformers instead, e.g. the demo's llava-hf copy (configs/demo_transformers.yaml: "
                    "model.transformers.path: demo-base-hf), and export that run")
    # no --config and no run directory around the adapter: the default base was read, and the message says so
    with pytest.raises(UserError, match=r"merge: model\.base is llava.* \(no --config was given and no config\.yaml "
                                        r"sits beside the adapter, so the default base was read"):
        check_exportable("merge", _changed(lora_config, model__base="llava"), tmp_path / "out", config_given=False)


def test_an_output_folder_with_files_or_a_file_is_refused(tmp_path, lora_config):
    output = tmp_path / "out"
    output.mkdir()
    check_exportable("export", lora_config, output)  # empty: written into
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ExistingFileError) as refused:
        check_exportable("export", lora_config, output)
    assert str(refused.value) == (f"export: --output {output} already holds files (notes.txt); give a new or empty "
                                  "folder (nothing is overwritten)")
    with pytest.raises(ExistingFileError) as refused:
        check_exportable("merge", lora_config, output / "notes.txt")
    assert str(refused.value) == f"merge: --output {output / 'notes.txt'} is a file; give a new or empty folder"
    assert (output / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="export: --model.adapter_path is missing"):
        check_exportable("export", _changed(lora_config, model__adapter_path=None), tmp_path / "new")


def test_merge_refuses_a_quantized_base(tmp_path, capsys):
    args = _transformers_args("--model.adapter.method", "lora", "--model.adapter.ranks", "[8]",
                              "--model.adapter_path", str(tmp_path), "--output", str(tmp_path / "out"))
    line = _refused(["merge", *args, "--model.quantization.bits", "4"], capsys)
    assert line == ("error: merge: model.quantization.bits is 4: merging the LoRA into quantized weights would round "
                    "most of it away; merge into the base loaded unquantized (--model.quantization.bits null, with "
                    "model.transformers.dtype bf16 or fp32)")
