"""Command line: ``python -m rode_lightning fit|validate|test|predict --config CONFIG.yaml``.

LightningCLI builds the model and data module from the YAML (every constructor argument is a documented key;
``--print_config`` shows them all). The tokenizer and the vision encoder's input shape are set once, on the model:
the model's conversation format turns the data module's conversations into its batches.
"""

from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from rode_lightning.adapters.methods import METHODS, methods_help
from rode_lightning.callbacks.interrupt import GracefulInterrupt
from rode_lightning.callbacks.prediction_writer import JSONLPredictionWriter
from rode_lightning.compat import argument_action
from rode_lightning.console import configure_console
from rode_lightning.data.datamodule import FoodDataModule, default_demo_dir
from rode_lightning.data.legacy_keys import DROPPED, rewrite_arguments
from rode_lightning.model.module import FoodLMMModule
from rode_lightning.scale.sharded_checkpoint import is_sharded_checkpoint
from rode_lightning.pretrain.build import DEMO_BASE
from rode_lightning.pretrain.llava_hf import DEMO_BASE_HF, demo_base_hf
from rode_lightning.user_errors import MissingFileError, UserError, reported_in_one_line


class RoDECLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # A module-level function, not a lambda: the parser travels with the trainer to spawned DDP processes. (The
        # tokenizer and the image shape are the model's alone: its conversation format spells the data's words.)
        parser.link_arguments("model.adapter", "data.clusters.count", compute_fn=_clusters_needed, apply_on="parse")
        # Always present, so `predict` writes its answers without extra configuration (`--predictions.output_path`).
        parser.add_lightning_class_args(JSONLPredictionWriter, "predictions")
        # Always present: Ctrl-C or SIGTERM during fit ends with a resumable checkpoint and the command to resume.
        parser.add_lightning_class_args(GracefulInterrupt, "interrupt")
        set_method_help(parser)

    def parse_arguments(self, parser, args) -> None:
        given = sys.argv[1:] if args is None else args
        check_config_files(given)
        if isinstance(given, (list, tuple)):
            rewritten = rewrite_legacy_arguments(list(given))
            args = None if args is None and rewritten == list(given) else rewritten
        with warnings.catch_warnings():  # the rewritten command line is the user's own, not a second one
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_checkpoint_path(self.config[subcommand].get("ckpt_path"))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        resolve_demo_base(config)
        if self.subcommand in ("validate", "test", "predict"):
            write_next_to_trained_run(config, self.subcommand)
        if self.subcommand == "predict":
            use_saved_instruction_clusters(config)
        if self.subcommand in ("validate", "test"):
            # The module prints its own rounded table per dataset and task; Lightning's repeats it unrounded.
            config["verbose"] = False

    def instantiate_trainer(self, **kwargs):
        """Lightning refuses some trainer settings with a plain ValueError (``fsdp`` on a CPU, a bad ``devices``
        value): here, where the trainer is built from the user's keys, that is the user's mistake, not a bug."""
        try:
            return super().instantiate_trainer(**kwargs)
        except ValueError as error:
            raise UserError(f"trainer: {error}") from error


def set_method_help(parser) -> None:
    """``--help`` lists the methods registered now, each with its own summary, rather than the list AdapterConfig's
    docstring was written with (a method registered by a script before it runs the CLI is listed too)."""
    action = argument_action(parser, "model.adapter.method")  # FoodLMMModule's own keys (no subclass mode)
    if action is not None:
        action.help = methods_help()  # jsonargparse leaves a lone % as it is (no argparse-style %% escape)


def check_config_files(args) -> None:
    """Read every ``--config`` YAML file first, so that a syntax error names the file (jsonargparse's own message
    says ``"<unicode string>"``)."""
    if not isinstance(args, (list, tuple)):
        return
    import yaml

    paths = [value for flag, value in zip(args, args[1:]) if flag == "--config"]
    paths += [argument.split("=", 1)[1] for argument in args if argument.startswith("--config=")]
    for path in map(Path, paths):
        if not path.is_file():
            continue  # jsonargparse names a missing file itself
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise UserError(f"--config {path}: not UTF-8 text (byte {error.start}); expected a YAML file") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise UserError(f"--config {path}:{where}: not valid YAML ({problem})") from None


def rewrite_legacy_arguments(args: list[str]) -> list[str]:
    """``args`` with the data keys of earlier versions in today's form (``data/legacy_keys.py``), and a warning
    that shows the new form, so that an old config (or a run's saved ``config.yaml``) still runs."""
    rewritten, places = rewrite_arguments(args)
    if places:
        where = [place for place in places if not place.startswith("read as")]
        new_form = "".join(f"; {place}" for place in places if place.startswith("read as"))
        dropped = [key for key in DROPPED if any(f"data.{key}" in place for place in where)]
        note = (f"; {', '.join(f'data.{key}' for key in dropped)}: no longer used (the model's conversation format "
                "owns them), dropped") if dropped else ""
        warnings.warn(f"old data keys ({'; '.join(where)}) rewritten to today's form{new_form}{note} - write the "
                      "new keys instead (README.md, Configuration: data.sources, data.tasks, data.clusters, "
                      "data.predict)", FutureWarning, stacklevel=2)
    return rewritten


# Values of --ckpt_path that Lightning resolves itself (``Trainer.fit(ckpt_path=...)``), not file names.
_LIGHTNING_CHECKPOINT_NAMES = ("last", "best", "hpc", "registry")


def check_checkpoint_path(ckpt_path: str | None) -> None:
    """Refuse a ``--ckpt_path`` that is not a checkpoint before Lightning reads it, naming the file: a missing
    path, or a file that is not a ``torch.save`` archive (truncated, or something else), which ``torch.load``
    reports as an unpickling error naming neither. A folder is a sharded FSDP checkpoint (``scale/strategy.py``)."""
    name = (ckpt_path or "").split(":")[0]
    if name in ("best", "hpc"):
        # Lightning knows these only within the process that trained (a ModelCheckpoint's best, a SLURM requeue):
        # a command of its own never has one, and Lightning would refuse it with a plain ValueError.
        raise UserError(f"--ckpt_path {ckpt_path}: a name Lightning resolves only inside the run that trained; give "
                        "a checkpoint file, e.g. <log dir>/checkpoints/last.ckpt")
    if not ckpt_path or name in _LIGHTNING_CHECKPOINT_NAMES or "://" in ckpt_path:
        return  # Lightning finds "last" itself; remote storage is read by fsspec
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        if not is_sharded_checkpoint(path):
            raise MissingFileError(f"--ckpt_path {path}: the folder is not a sharded checkpoint (no meta.pt)")
        return
    if not path.is_file():
        raise MissingFileError(f"--ckpt_path {path} does not exist; the run's checkpoints are in "
                               "<log dir>/checkpoints/ (last.ckpt, interrupted-step=S.ckpt)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"--ckpt_path {path} is not a Lightning checkpoint (truncated, or another kind of file); "
                        "resume from another one in the same folder, e.g. last.ckpt")


# Loggers whose directory is save_dir/name/version, which write_next_to_trained_run can point at a trained run.
_DIRECTORY_LOGGERS = ("lightning.pytorch.loggers.TensorBoardLogger", "lightning.pytorch.loggers.CSVLogger",
                      "TensorBoardLogger", "CSVLogger")


def trained_run_dir(adapter_path: str | None, ckpt_path: str | None) -> Path | None:
    """The log directory of the training run that wrote an adapter (``<run>/adapter``) or a checkpoint
    (``<run>/checkpoints/<file>``); ``None`` when the weights do not sit in a run's directory (no ``hparams.yaml``
    beside them), e.g. an adapter downloaded elsewhere."""
    if ckpt_path and Path(ckpt_path).parent.name == "checkpoints":
        candidate = Path(ckpt_path).parent.parent
    elif adapter_path:
        candidate = Path(adapter_path).parent
    else:
        return None
    return candidate if (candidate / "hparams.yaml").is_file() or (candidate / "config.yaml").is_file() else None


def write_next_to_trained_run(config, subcommand: str) -> None:
    """Let ``validate``, ``test`` and ``predict`` of a trained adapter or checkpoint write into
    ``<run>/<subcommand>/`` (results tables, predictions, logs) instead of opening a new ``version_N`` beside the
    run, so that a run's directory holds everything done with it and README's ``version_0`` commands keep
    matching. Runs without trained weights, with another logger or with a ``trainer.logger.init_args.version`` of
    their own keep the logger's own directory."""
    run = trained_run_dir(config.get("model.adapter_path"), config.get("ckpt_path"))
    logger = config.get("trainer.logger")
    if run is None or logger is None or isinstance(logger, (bool, list)):
        return
    if getattr(logger, "class_path", None) not in _DIRECTORY_LOGGERS:
        return
    if logger.init_args.get("version") is not None:
        return  # a version chosen on purpose (the grid runner, scripts/demo_results.py) is kept
    logger.init_args.save_dir = str(run)
    logger.init_args.name = ""
    logger.init_args.version = subcommand


def resolve_demo_base(config) -> None:
    """Replace every ``demo-base`` value by the base's real path, building the base first if it is not there.
    What the model then loads is an open_clip checkpoint and a LLaVA v1.5 directory, by the code that loads
    CLIP ViT-L and LLaVA-7B. ``model.transformers.path: demo-base-hf`` is the same base as a llava-hf directory
    (``pretrain/llava_hf.py``), converted on first use."""
    keys = ("model.vision.checkpoint", "model.language.path", "model.tokenizer")
    wanted = [key for key in keys if config.get(key) == DEMO_BASE]
    demo_dir = config.get("data.demo_dir") or default_demo_dir()
    if config.get("model.transformers.path") == DEMO_BASE_HF:
        config["model.transformers.path"] = str(demo_base_hf(demo_dir))
    if not wanted:
        return
    from rode_lightning import pretrain

    base = pretrain.build_demo_base(f"{demo_dir}/base")
    paths = {"model.vision.checkpoint": base.vision_checkpoint, "model.language.path": base.llava,
             "model.tokenizer": base.llava}
    for key in wanted:
        config[key] = str(paths[key])


def use_saved_instruction_clusters(config) -> None:
    """A cluster adapter that carries its instruction clusterer routes ``predict``'s questions with it, without the
    training data (``data.clusters.saved``); an older one without it clusters the training data again."""
    from rode_lightning.data.clusters import CLUSTERS_CONFIG

    adapter_path = config.get("model.adapter_path")
    if (adapter_path and config.get("data.clusters.count") and not config.get("data.clusters.saved")
            and (Path(adapter_path) / CLUSTERS_CONFIG).is_file()):
        config["data.clusters.saved"] = str(adapter_path)


def _clusters_needed(adapter) -> int | None:
    """The data side clusters instructions only for MoCLE routing."""
    method = adapter.method if hasattr(adapter, "method") else adapter["method"]
    number = adapter.num_clusters if hasattr(adapter, "num_clusters") else adapter["num_clusters"]
    # An unknown method is not this link's to report: the adapter config names it when it is built.
    return number if method in METHODS and METHODS[method].needs_cluster_features else None


_CLI_OPTIONS = {"auto_configure_optimizers": False}  # shared by the run and the parse-only parser


class _ParseOnly(RoDECLI):
    """The CLI's parser and nothing after it: no seed set, no class built, no subcommand run."""

    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def parse_fit_arguments(args: list[str]):
    """The configuration ``fit`` would run with ``args`` (``--config`` files and overlays, ``--key value``
    overrides), parsed and type-checked by the same parser and links, with nothing built or read: ``demo-base`` and
    paths stay as written. For tools that reason about a run before it starts (``python -m rode_lightning.estimate``).
    A mistake raises as it does for ``fit``."""
    check_config_files(args)
    with warnings.catch_warnings():  # the caller's own command line is not this parser's: no mix-up to warn about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = _ParseOnly(FoodLMMModule, FoodDataModule, args=["fit", *args], run=True, **_CLI_OPTIONS,
                         parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False})
    return cli.config["fit"]


def main(args: list[str] | None = None, run: bool = True, exit_on_error: bool = True) -> RoDECLI:
    """Parse ``args`` (default: the command line) and run the subcommand; with ``run=False`` there is no subcommand,
    and the CLI only builds the trainer, model and data module from the arguments, for a script to drive."""
    configure_console()
    cli = RoDECLI(FoodLMMModule, FoodDataModule, args=args, run=run, save_config_kwargs={"overwrite": True},
                  **_CLI_OPTIONS, parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": exit_on_error})
    interrupt = next((callback for callback in cli.trainer.callbacks if isinstance(callback, GracefulInterrupt)), None)
    if interrupt is not None and interrupt.received is not None:
        raise SystemExit(128 + interrupt.received)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    return cli


def run_command_line(args: list[str] | None = None) -> None:
    """``python -m rode_lightning``: :func:`main` (or ``chat``, ``serve``, ``demo``, ``export``, ``merge``), with a
    user's mistake reported as one ``error:`` line on stderr and exit status 2 (``rode_lightning/user_errors.py``),
    the traceback only with ``RODE_TRACEBACK=1``."""
    args = sys.argv[1:] if args is None else args
    with reported_in_one_line():
        if args and args[0] == "chat":
            run_chat(args[1:])
        elif args and args[0] == "serve":
            run_serve(args[1:])
        elif args and args[0] == "demo":
            run_demo(args[1:])
        elif args and args[0] in ("export", "merge"):
            run_export_command(args[0], args[1:])
        else:
            if not args or args[0] in ("-h", "--help"):
                print("python -m rode_lightning {chat,serve,demo} [--help]: use a trained model (a terminal chat, an "
                      "OpenAI-compatible server, a web page).\n"
                      "python -m rode_lightning {export,merge} [--help]: write a plain LoRA out in peft's format "
                      "(peft, vLLM), or the transformers base with it merged into the weights.\n"
                      "The commands below train and evaluate.\n")
            main(args, exit_on_error=False)


def build_engine(args: list[str], device=None, command: str = "serve"):
    """The inference engine of the model that ``args`` configure (as for ``test``: ``--config`` files,
    ``--model.adapter_path``), on ``device``, with a cluster-routed adapter's saved instruction clusters."""
    from rode_lightning.inference.engine import InferenceEngine

    module = build_module(args)
    clusters = None
    if module.adapter_config.adapter_method.needs_cluster_features:
        from rode_lightning.data.clusters import InstructionClusters

        clusters = InstructionClusters.load(module.hparams.adapter_path) if module.hparams.adapter_path else None
        if clusters is None:
            raise UserError(f"{command}: a cluster-routed adapter (MoCLE) routes by the instruction clusters saved "
                            "with it at the end of fit; give --model.adapter_path of one trained since they are saved "
                            "(an older one: train it again, or use predict, which clusters the training data again)")
    engine = InferenceEngine(module, clusters=clusters)  # builds the model if the CLI has not
    if device is not None:
        engine.module.to(device)
    return engine


def build_module(args: list[str]):
    """The Lightning module that ``args`` configure (as for ``test``); its network is built by ``configure_model``."""
    with warnings.catch_warnings():  # the command line is the subcommand's, not this parser's: no mix-up to warn about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return main(args, run=False, exit_on_error=False).model


def run_export_command(command: str, args: list[str]) -> None:
    """``export`` / ``merge``: a plain LoRA in peft's format, or the base with it merged (``export.py``)."""
    from rode_lightning.export import run_export

    run_export(command, args, parse_fit_arguments, build_module)


def run_chat(args: list[str], lines=None, write=print) -> None:
    """``python -m rode_lightning chat --image PHOTO [--config ...] [--model.adapter_path ...]``: the model the other
    arguments configure (as for ``test``), asked about the photo line by line (``inference/chat.py``)."""
    import argparse

    from rode_lightning.inference.chat import chat, open_image

    parser = argparse.ArgumentParser(prog="python -m rode_lightning chat", add_help=False)
    parser.add_argument("--image", required=True)
    known, rest = parser.parse_known_args(args)
    image = open_image(known.image)
    chat(build_engine(rest, command="chat"), image, sys.stdin if lines is None else lines, write)


def run_serve(args: list[str]) -> None:
    """``python -m rode_lightning serve [--host ... --port ... --api_key ...] --config ... [--model.adapter_path
    ...]``: the configured model behind an OpenAI-compatible API (``serving/``)."""
    from rode_lightning.serving.server import parse_serve_arguments, serve

    options, rest = parse_serve_arguments(args)
    serve(options, rest, build_engine)


def run_demo(args: list[str]) -> None:
    """``python -m rode_lightning demo --config ... [--model.adapter_path ...] [--compare ADAPTER_DIR]``: the web
    demo (``webdemo/``): the configured model, and another run's adapter beside it."""
    from rode_lightning.webdemo.app import ShownModel, launch, parse_demo_arguments

    options, rest = parse_demo_arguments(args)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("demo: the web demo needs gradio, an extra: pip install -e \".[demo]\"") from None
    first = build_engine(rest, command="demo")
    models = [ShownModel(first.module.hparams.adapter_path or "the base model (no adapter)", first)]
    if options.compare:
        models.append(ShownModel(options.compare, build_engine(saved_run_arguments(options.compare), command="demo")))
    options.examples = demo_test_photos(rest)
    print(f"the demo page: http://{options.host}:{options.port} (Ctrl-C stops)", flush=True)
    launch(options, models)


def saved_run_arguments(adapter_dir: str) -> list[str]:
    """Arguments that build the model of a trained run from its adapter directory: the ``config.yaml`` that ``fit``
    saved beside it (without ``fit``'s own keys) and ``--model.adapter_path``."""
    import tempfile

    import yaml

    adapter = Path(adapter_dir).expanduser()
    config = adapter.parent / "config.yaml"
    if not adapter.is_dir():
        raise MissingFileError(f"--compare: {adapter} is not an adapter directory")
    if not config.is_file():
        raise MissingFileError(f"--compare: no config.yaml beside {adapter} (fit saves one in the run directory); "
                               "compare an adapter of a run trained by fit")
    saved = yaml.safe_load(config.read_text())
    for key in ("ckpt_path", "weights_only"):  # fit's arguments, not the model's
        saved.pop(key, None)
    copy = Path(tempfile.mkdtemp(prefix="rode_compare_")) / "config.yaml"
    copy.write_text(yaml.safe_dump(saved))
    return ["--config", str(copy), "--model.adapter_path", str(adapter)]


def demo_test_photos(args: list[str], limit: int = 8) -> list[Path]:
    """The demo Uni-Food copy's test photos (``data.demo_dir``), offered as examples; none when not generated."""
    demo_dir = parse_fit_arguments(args).data.demo_dir
    folder = Path(demo_dir).expanduser() if demo_dir else default_demo_dir()
    return sorted((folder / "unifood" / "images").glob("test_*.png"))[:limit]
