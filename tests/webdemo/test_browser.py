"""The web demo in a real headless browser (Debian's chromium, driven by selenium; ``.ci/run`` installs it with apt):
a RoDE adapter and, beside it, a LoRA adapter of another run (``--compare``: built from that run's saved
``config.yaml``); a demo test photo uploaded, its ingredients asked; the answers are the engine's, the parsed values
shown, RoDE's heatmaps drawn and LoRA's absent (no router)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from PIL import Image

from rode_lightning.cli import build_engine, saved_run_arguments
from rode_lightning.inference.engine import Request
from rode_lightning.webdemo.app import DemoOptions, ShownModel, launch
from tests.conftest import tiny_cli_args

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
from web_demo_screenshot import ask_in_browser, chromium  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page(tiny_runs, cli_demo_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("demo_logs")
    rode = build_engine([*tiny_cli_args(cli_demo_dir, logs), "--model.adapter_path", str(tiny_runs.rode)],
                        command="demo")
    lora = build_engine(saved_run_arguments(str(tiny_runs.lora)), command="demo")
    models = [ShownModel("rode", rode), ShownModel("lora r32", lora)]
    photos = sorted((cli_demo_dir / "unifood" / "images").glob("test_*.png"))
    options = DemoOptions(port=_free_port(), examples=photos[:4])
    app = launch(options, models, block=False)
    yield f"http://127.0.0.1:{options.port}", models, photos
    app.close()


def test_the_page_answers_a_photo_with_each_adapter_and_shows_the_experts(page, tmp_path):
    url, models, photos = page
    driver = chromium()
    try:
        results = ask_in_browser(driver, url, photos[0], "ingredients", columns=2)
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
    with Image.open(photos[0]) as photo:
        expected = [model.engine.answer([Request(photo.convert("RGB"), task="ingredients")])[0] for model in models]
    for result, answer in zip(results, expected):
        assert result["answer"].removesuffix(" [cut at the answer length limit]") == answer.text
        assert result["parsed"].startswith("ingredients read:")
        assert (", ".join(answer.parsed["ingredients"]) or "none") in result["parsed"]
    assert results[0]["heatmaps"] and not results[1]["heatmaps"]  # RoDE's routers; LoRA has none
    with Image.open(tmp_path / "page.png") as screenshot:
        assert screenshot.size[0] >= 1000
