"""A plain LoRA trained here, out in the formats other tools load: ``export`` writes peft's own adapter directory
(``PeftModel.from_pretrained``, vLLM's ``--lora-modules``), ``merge`` the transformers base with the LoRA merged into
its weights (``AutoModelForImageTextToText.from_pretrained``).

Both are written by peft itself, not by a copy of its schema. The trained model is built as ``test`` builds it (the
CLI hands its builder over, as it does to ``serve``); its peft LoRA layers, which ``adapters/methods/lora.py`` put
into the language model with ``inject_adapter_in_model`` (no ``PeftModel`` around them), are lifted into a
``PeftModel``: each is replaced by its base layer, ``get_peft_model`` puts peft's layers back at the same places with
the run's rank, alpha and dropout, and the trained matrices are copied into them. ``save_pretrained`` then writes
``adapter_model.safetensors`` (``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight``) and
``adapter_config.json`` (peft's ``LoraConfig``); ``merge_and_unload`` gives the merged model.

A connector trained with the adapters (``model.train_projector: true``) goes into the export as peft's
``modules_to_save`` (peft loads it, so the outputs stay equal); vLLM's LoRA loader takes LoRA weights only (its
``PEFTHelper`` refuses any ``modules_to_save``), so an export for vLLM needs a run trained with
``train_projector: false``. A merged model holds everything.

Refused, each with one ``error:`` line: a mixture method (its router weighs the experts anew for every token, so there
is no single LoRA), the LLaVA-1.5 base (this package's own model class, which neither peft nor vLLM loads), an output
folder that already holds files, and for ``merge`` a quantized base (the LoRA would be rounded away).
"""

from __future__ import annotations

import argparse
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from rode_lightning.adapters.methods import get_method
from rode_lightning.atomic import current_umask
from rode_lightning.data.legacy_keys import config_copy
from rode_lightning.model.dtypes import DTYPES
from rode_lightning.user_errors import ExistingFileError, UserError

EXPORT, MERGE = "export", "merge"
# vLLM's --max-lora-rank takes one of these (vllm/config/lora.py: MaxLoRARanks; its default is 16)
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_NAME = "default"  # the adapter name lora.py injects under (peft's default); peft's files leave it out

USAGE = {
    EXPORT: ("python -m rode_lightning export --config RUN_CONFIG --model.adapter_path RUN/adapter --output DIR\n\n"
             "Writes a plain LoRA (model.adapter.method: lora, model.base: transformers) as peft's save_pretrained "
             "does: adapter_model.safetensors and adapter_config.json, loaded by PeftModel.from_pretrained(base, DIR) "
             "and, without a trained connector (model.train_projector: false), by vLLM (--enable-lora --lora-modules "
             "NAME=DIR). --config may be left out when the adapter sits in a run directory with fit's config.yaml."),
    MERGE: ("python -m rode_lightning merge --config RUN_CONFIG --model.adapter_path RUN/adapter --output DIR\n\n"
            "Writes the transformers base with the plain LoRA (and a trained connector) merged into its weights, and "
            "its processor's files: AutoModelForImageTextToText.from_pretrained(DIR) and "
            "AutoProcessor.from_pretrained(DIR) load it, as does vLLM. --config may be left out when the adapter sits "
            "in a run directory with fit's config.yaml."),
}


def parse_export_arguments(command: str, args: list[str]) -> tuple[Path, list[str]] | None:
    """``--output`` and the model's own arguments (``--config``, ``--model.*``); None after printing the usage for
    ``--help``."""
    if "-h" in args or "--help" in args:
        print(USAGE[command])
        return None
    parser = argparse.ArgumentParser(prog=f"python -m rode_lightning {command}", add_help=False, allow_abbrev=False)
    parser.add_argument("--output")
    known, rest = parser.parse_known_args(args)
    if not known.output:
        raise UserError(f"{command}: --output DIR is missing: the folder to write (new, or empty)")
    return Path(known.output).expanduser(), rest


def check_exportable(command: str, config, output: Path, config_given: bool = True) -> None:
    """Refuse what cannot be written, from the parsed configuration (``cli.parse_fit_arguments``), before anything is
    built or read."""
    if config.get("model.base") != "transformers":
        hint = "" if config_given else (" (no --config was given and no config.yaml sits beside the adapter, so "
                                        "the default base was read; give the run's config)")
        raise UserError(f"{command}: model.base is llava, this package's own LLaVA-1.5 model class (an open_clip "
                        "tower, a projector and a LLaMA), not a transformers model that peft or vLLM could load; train "
                        "on model.base: transformers instead, e.g. the demo's llava-hf copy "
                        "(configs/demo_transformers.yaml: model.transformers.path: demo-base-hf), and "
                        f"{command} that run{hint}")
    method_name = config.get("model.adapter.method")
    method = get_method(method_name)
    if not method.is_one_lora:
        how = ("for every question by its instruction cluster" if method.needs_cluster_features
               else "for every token")
        raise UserError(f"{command}: adapter method '{method_name}' mixes LoRA experts with a router that weighs them "
                        f"anew {how}, so there is no single LoRA to write: routed experts cannot be merged into the "
                        "weights or served as one peft or vLLM LoRA; only method 'lora' exports (serve this adapter "
                        "with python -m rode_lightning serve)")
    bits = config.get("model.quantization.bits")
    if command == MERGE and bits is not None:
        raise UserError(f"merge: model.quantization.bits is {bits}: merging the LoRA into "
                        "quantized weights would round most of it away; merge into the base loaded unquantized "
                        "(--model.quantization.bits null, with model.transformers.dtype bf16 or fp32)")
    if not config.get("model.adapter_path"):
        raise UserError(f"{command}: --model.adapter_path is missing: the trained adapter to write (<run>/adapter)")
    check_output(command, output)


def check_output(command: str, output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ExistingFileError(f"{command}: --output {output} is a file; give a new or empty folder")
    if output.is_dir():
        present = sorted(path.name for path in output.iterdir())
        if present:
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise ExistingFileError(f"{command}: --output {output} already holds files ({shown}); give a new or empty "
                                    "folder (nothing is overwritten)")


def run_export(command: str, args: list[str], parse: Callable, build: Callable) -> Path | None:
    """``export`` or ``merge`` (``command``) with the command line's ``args``: ``parse`` gives the configuration
    they make (``cli.parse_fit_arguments``), ``build`` the Lightning module (``cli.build_module``), whose network is
    then built plainly (no compiled blocks, no activation checkpointing) with its trained adapter. Returns the folder
    written."""
    parsed = parse_export_arguments(command, args)
    if parsed is None:
        return None
    output, rest = parsed
    rest = run_config_arguments(rest)
    config_given = any(argument == "--config" or argument.startswith("--config=") for argument in rest)
    check_exportable(command, parse(rest), output, config_given)
    module = build([*rest, "--model.compile", "null", "--model.gradient_checkpointing", "false"])
    module.configure_model()
    return (export_adapter if command == EXPORT else merge_adapter)(module, output)


FIT_KEYS = ("ckpt_path", "weights_only")  # fit's arguments in a run's saved config.yaml, not the model's


def run_config_arguments(args: list[str]) -> list[str]:
    """``args`` that build a trained run's model: each ``--config`` without ``fit``'s own keys (a run's saved
    ``config.yaml`` is taken as it is), or, when none is given, the ``config.yaml`` that ``fit`` saved beside the
    adapter of ``--model.adapter_path`` in front (the user's own keys still win: they come after it)."""
    given = [index for index, argument in enumerate(args) if argument == "--config" or argument.startswith("--config=")]
    if given:
        rewritten = list(args)
        for index in given:
            if args[index] == "--config" and index + 1 < len(args):
                rewritten[index + 1] = without_fit_keys(args[index + 1])
            elif args[index] != "--config":
                rewritten[index] = "--config=" + without_fit_keys(args[index].split("=", 1)[1])
        return rewritten
    adapter = next((value for option, value in zip(args, args[1:]) if option == "--model.adapter_path"), None)
    adapter = adapter or next((argument.split("=", 1)[1] for argument in args
                               if argument.startswith("--model.adapter_path=")), None)
    saved = Path(adapter).expanduser().parent / "config.yaml" if adapter else None
    return ["--config", without_fit_keys(str(saved)), *args] if saved is not None and saved.is_file() else args


def without_fit_keys(config: str) -> str:
    """The ``--config`` file ``config`` as the model's parser takes it: a copy without ``fit``'s own keys where it
    has them (a run's saved ``config.yaml``), else the file as given."""
    import yaml

    try:
        saved = yaml.safe_load(Path(config).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return config  # the parser names what is wrong with it
    if not isinstance(saved, dict) or not any(key in saved for key in FIT_KEYS):
        return config
    return config_copy(config, {key: value for key, value in saved.items() if key not in FIT_KEYS})


# --- the trained LoRA as a PeftModel --------------------------------------------------------------------------------


def lift_to_peft(module):
    """The module's transformers model (``module.model.hf``) as a ``PeftModel`` holding the trained LoRA, in place:
    the model's forward is unchanged. A connector trained with the adapters becomes peft's ``modules_to_save``, with
    any LoRA layers inside it (``adapter.scope: model``) merged into it first."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    hf, adapter = module.model.hf, module.adapter_config
    connectors = trained_connector_names(module)
    layers = {name: layer for name, layer in hf.named_modules() if isinstance(layer, LoraLayer)}
    if not layers:
        raise RuntimeError("export: the model has no peft LoRA layer; method 'lora' should have put them in")
    trained = {}
    for name, layer in layers.items():
        if any(name.startswith(connector + ".") for connector in connectors):
            layer.merge(adapter_names=[ADAPTER_NAME])  # saved whole with its connector
        else:
            trained[name] = (layer.lora_A[ADAPTER_NAME].weight.detach().clone(),
                             layer.lora_B[ADAPTER_NAME].weight.detach().clone())
        hf.set_submodule(name, layer.get_base_layer())
    for part in hf.modules():  # inject_adapter_in_model's record on the module it adapted: no adapter is left there
        part.__dict__.pop("peft_config", None)
    config = LoraConfig(r=adapter.ranks[0], lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, bias="none",
                        target_modules=peft_target_modules(hf, adapter.target_modules, set(trained), connectors),
                        modules_to_save=connectors or None)
    peft_model = get_peft_model(hf, config, adapter_name=ADAPTER_NAME)
    # get_peft_model records the path the base was loaded from as given; the resolved one loads from anywhere
    base = module.transformers_config.directory().resolve()
    peft_model.peft_config[ADAPTER_NAME].base_model_name_or_path = str(base)
    lifted = {name: layer for name, layer in hf.named_modules() if isinstance(layer, LoraLayer)}
    if set(lifted) != set(trained):
        raise RuntimeError(f"export: peft put LoRA layers on {sorted(set(lifted) ^ set(trained))[:3]} where "
                           "training had not, or not where it had")
    with torch.no_grad():
        for name, (a, b) in trained.items():
            lifted[name].lora_A[ADAPTER_NAME].weight.copy_(a)
            lifted[name].lora_B[ADAPTER_NAME].weight.copy_(b)
    return peft_model.eval()


def trained_connector_names(module) -> list[str]:
    """The names, in the transformers model, of the connector modules that trained (``model.train_projector``); a
    module list (Qwen3-VL's deepstack mergers) by its elements, which are what its model calls."""
    if not module.hparams.train_projector:
        return []
    names = {id(part): name for name, part in module.model.hf.named_modules()}
    found = []
    for connector in module.model.connectors:
        parts = list(connector) if isinstance(connector, nn.ModuleList) else [connector]
        found += [names[id(part)] for part in parts]
    return found


def peft_target_modules(hf: nn.Module, entries: list[str], adapted: set[str], connectors: list[str]) -> list[str]:
    """``target_modules`` for peft: the run's own entries where peft, matching them over the whole model, finds
    exactly the trained layers (``q_proj`` in a language model whose vision tower has none); otherwise each trained
    layer's full name (``adapter.scope: language_model`` keeps ``q_proj`` out of a CLIP tower that peft would adapt
    too; ``re:`` and ``all-linear`` entries have no peft spelling with this package's meaning)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    plain = [entry for entry in entries if not entry.startswith("re:") and entry != "all-linear"]
    if plain == list(entries):
        candidate = LoraConfig(target_modules=plain, modules_to_save=connectors or None)
        matched = {name for name, _ in hf.named_modules() if check_target_module_exists(candidate, name)}
        if matched == adapted:
            return list(entries)
    return sorted(adapted)


# --- writing --------------------------------------------------------------------------------------------------------


@contextmanager
def written_whole(output: Path) -> Iterator[Path]:
    """A folder to write ``output``'s files into; when the block ends without an error it becomes ``output`` (a new
    or empty folder), its files with the umask's permissions (safetensors creates its own ``0600``). On an error
    nothing is left behind."""
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        for path in partial.rglob("*"):
            if path.is_file():
                os.chmod(path, 0o666 & ~current_umask())
        os.replace(partial, output)  # an empty output folder is replaced in the same rename
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def export_adapter(module, output: Path) -> Path:
    """Write the module's trained LoRA to ``output`` as peft's ``save_pretrained`` writes an adapter."""
    peft_model = lift_to_peft(module)
    with written_whole(output) as partial:
        peft_model.save_pretrained(str(partial))
    config = peft_model.peft_config[ADAPTER_NAME]
    layers = sum(1 for name, _ in peft_model.named_modules() if name.endswith(f".lora_A.{ADAPTER_NAME}"))
    print(f"export: wrote {output}: adapter_model.safetensors and adapter_config.json in peft's format (LoRA rank "
          f"{config.r}, alpha {config.lora_alpha:g}, on {layers} layers of {type(module.model.hf).__name__}); load "
          f"it with PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained("
          f"'{config.base_model_name_or_path}'), '{output}')", flush=True)
    if config.modules_to_save:
        warnings.warn(f"export: the trained connector ({', '.join(sorted(config.modules_to_save))}) is in {output} as "
                      "peft's modules_to_save: peft loads it, but vLLM's LoRA loader takes LoRA weights only and "
                      "refuses an adapter with modules_to_save; for vLLM, train with model.train_projector: false, or "
                      "serve the merged model (python -m rode_lightning merge)", UserWarning, stacklevel=2)
    else:
        rank = next((allowed for allowed in VLLM_MAX_LORA_RANKS if allowed >= config.r), config.r)
        print(f"export: vLLM serves it on the same base: vllm serve '{config.base_model_name_or_path}' --enable-lora "
              f"--max-lora-rank {rank} --lora-modules NAME={output}", flush=True)
    return output


def merge_adapter(module, output: Path) -> Path:
    """Write the module's transformers base with the trained LoRA merged into its weights (peft's
    ``merge_and_unload``), and its processor's files, to ``output``."""
    peft_model = lift_to_peft(module)
    layers = sum(1 for name, _ in peft_model.named_modules() if name.endswith(f".lora_A.{ADAPTER_NAME}"))
    connectors = list(peft_model.peft_config[ADAPTER_NAME].modules_to_save or [])
    merged = peft_model.merge_and_unload()
    dtype = DTYPES[module.transformers_config.dtype]
    for name in connectors:  # trained in fp32 over a bf16/fp16 base: written in the model's own dtype
        merged.get_submodule(name).to(dtype)
    with written_whole(output) as partial:
        merged.save_pretrained(str(partial))
        module.processor.save_pretrained(str(partial))
    trained = f" and the trained connector ({', '.join(connectors)})" if connectors else ""
    print(f"merge: wrote {output}: {type(merged).__name__} with the LoRA ({layers} layers){trained} merged into its "
          f"{str(dtype).removeprefix('torch.')} weights, and its processor's files; load it with "
          f"AutoModelForImageTextToText.from_pretrained('{output}') and AutoProcessor.from_pretrained('{output}')",
          flush=True)
    return output

