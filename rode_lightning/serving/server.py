"""``python -m rode_lightning serve``: a trained model behind an OpenAI-compatible API, on LitServe.

    python -m rode_lightning serve --config configs/demo.yaml --model.adapter_path logs/demo/version_0/adapter

The model is configured as for ``test`` (every ``--config`` file and ``--key value``); the options below are the
server's own. The model is built once in this process to check the configuration (a mistake ends here in one line,
before any server starts), then freed, and built again by LitServe's inference worker, which answers the requests.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image

from rode_lightning.inference.engine import InferenceEngine
from rode_lightning.serving.images import ImageLimits
from rode_lightning.serving.spec import FoodChatSpec, ServingLimits
from rode_lightning.user_errors import UserError


@dataclass
class ServeOptions:
    """The server's settings (``serve --help``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    image_folder: str | None = None
    model_name: str | None = None
    max_batch_size: int = 8
    batch_timeout: float = 0.05
    request_timeout_s: float = 60.0
    max_new_tokens: int | None = None
    max_body_mb: float = 16.0
    max_image_mb: float = 10.0
    max_image_pixels: int = 36_000_000
    accelerator: str = "auto"
    log_level: str = "warning"


def parse_serve_arguments(args: list[str]) -> tuple[ServeOptions, list[str]]:
    """The server's options, and the rest of ``args`` (the model's configuration)."""
    parser = argparse.ArgumentParser(prog="python -m rode_lightning serve [--config ...] [--model.adapter_path ...]",
                                     description="The configured model behind an OpenAI-compatible API.",
                                     add_help=False)
    defaults = ServeOptions()
    parser.add_argument("--host", default=defaults.host, choices=["127.0.0.1", "0.0.0.0", "::"],
                        help="where to listen: 127.0.0.1 (this machine only, the default) or every interface")
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--api_key", default=None, help="require 'Authorization: Bearer <key>' on every request")
    parser.add_argument("--image_folder", default=None, help="image_url paths may point inside this folder")
    parser.add_argument("--model_name", default=None,
                        help="the model's name in /v1/models and requests (default: the adapter directory)")
    parser.add_argument("--max_batch_size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--batch_timeout", type=float, default=defaults.batch_timeout,
                        help="seconds to wait for a batch to fill")
    parser.add_argument("--request_timeout_s", type=float, default=defaults.request_timeout_s)
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="longest answer a request may ask for (default: model.max_new_tokens)")
    parser.add_argument("--max_body_mb", type=float, default=defaults.max_body_mb)
    parser.add_argument("--max_image_mb", type=float, default=defaults.max_image_mb)
    parser.add_argument("--max_image_pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument("--accelerator", default=defaults.accelerator, choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--log_level", default=defaults.log_level, choices=["debug", "info", "warning", "error"])
    if "-h" in args or "--help" in args:
        print(parser.format_help() + "\nThe model is configured as for test (--config, --model.adapter_path, ...): "
              "python -m rode_lightning test --help")
        raise SystemExit(0)
    known, rest = parser.parse_known_args(args)
    options = ServeOptions(**vars(known))
    _check(options)
    return options, rest


def _check(options: ServeOptions) -> None:
    positive = {"max_batch_size": options.max_batch_size, "request_timeout_s": options.request_timeout_s,
                "max_body_mb": options.max_body_mb, "max_image_mb": options.max_image_mb,
                "max_image_pixels": options.max_image_pixels}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"serve --{name}: {value}; expected a number above 0")
    if options.batch_timeout < 0 or options.batch_timeout >= options.request_timeout_s:
        raise UserError(f"serve --batch_timeout: {options.batch_timeout}; expected at least 0 and below "
                        f"--request_timeout_s ({options.request_timeout_s})")
    if options.max_new_tokens is not None and options.max_new_tokens < 1:
        raise UserError(f"serve --max_new_tokens: {options.max_new_tokens}; expected at least 1")
    if not 1024 <= options.port <= 65535:
        raise UserError(f"serve --port: {options.port}; expected 1024 to 65535")
    if options.image_folder is not None and not Path(options.image_folder).expanduser().is_dir():
        raise UserError(f"serve --image_folder: {options.image_folder} is not a folder")


def context_length(engine: InferenceEngine) -> int:
    config = engine.module.model.language_model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def build_server(options: ServeOptions, config_args: list[str], build_engine: Callable[..., InferenceEngine]):
    """The LitServer, checked: ``build_engine(config_args, device=None)`` builds the model (here once, to check it
    and read its format and context, then again in the worker)."""
    from litserve import LitServer

    from rode_lightning.serving.worker import FoodServingAPI

    engine = build_engine(config_args)
    module = engine.module
    name = options.model_name or module.hparams.adapter_path or "base"
    max_new_tokens = options.max_new_tokens or module.hparams.max_new_tokens
    limits = ServingLimits(max_body_bytes=int(options.max_body_mb * 2**20), request_timeout_s=options.request_timeout_s,
                           max_new_tokens=max_new_tokens, context_length=context_length(engine))
    images = ImageLimits(Path(options.image_folder).expanduser() if options.image_folder else None,
                         int(options.max_image_mb * 2**20), options.max_image_pixels)
    Image.MAX_IMAGE_PIXELS = options.max_image_pixels  # PIL's own decompression-bomb limit, for every open
    cancelled = multiprocessing.get_context("spawn").Queue()
    spec = FoodChatSpec(name, module.conversation_format, images, limits, cancelled, options.api_key)
    api = FoodServingAPI(partial(build_engine, config_args), cancelled, spec, options.max_batch_size,
                         options.batch_timeout)
    del engine, module
    gc.collect()
    return LitServer(api, accelerator=options.accelerator, devices=1, workers_per_device=1,
                     timeout=options.request_timeout_s, disable_openapi_url=True), name


def serve(options: ServeOptions, config_args: list[str], build_engine) -> None:
    server, name = build_server(options, config_args, build_engine)
    print(f"serving {name!r} on http://{options.host}:{options.port}/v1 (OpenAI chat completions; "
          f"{'API key required' if options.api_key else 'no API key'}); Ctrl-C stops", flush=True)
    server.run(host=options.host, port=options.port, generate_client_file=False, num_api_servers=1,
               log_level=options.log_level)
