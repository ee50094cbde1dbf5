"""README.md's "Train on your own data" example, run as written except for what makes it small: fewer photos, one
epoch, the tiny random model instead of the demo base (tests/pretrain builds the base), and short answers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.cli_process import run_cli_process

REPO = Path(__file__).parents[1]

SMALL = ("--data.demo_dir {demo_dir} --trainer.max_epochs 1 --data.batch_size 4 --data.eval_batch_size 4 "
         "--model.max_new_tokens 4 --trainer.enable_progress_bar false "
         "--model.vision.checkpoint null --model.language.path null --model.tokenizer demo")


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- own-data-example -->\n```bash\n(.*?)```\n<!-- /own-data-example -->", text, re.DOTALL)
    assert block, "README.md has no own-data-example block"
    return block.group(1).replace("\\\n", " ")  # continuation lines joined, so each command is one line


def test_readme_own_data_example_trains_and_tests_on_the_users_photos_only(tmp_path, cli_demo_dir):
    """The example's shell lines run in bash; its two ``python -m rode_lightning`` commands run as forks of a process
    that imported the CLI once (tests/cli_process.py: the same command line, without ~20 s of start-up each)."""
    for shared in ("configs", "scripts"):
        (tmp_path / shared).symlink_to(REPO / shared)
    steps: list[tuple[str, str | list[str]]] = []  # ("bash", lines) or ("cli", arguments)
    for line in readme_example().splitlines():
        if line.startswith("python scripts/example_photos.py"):
            line = line.split("#")[0] + " --train 24 --test 8"
        if line.startswith("python -m rode_lightning "):
            steps.append(("cli", shlex.split(line)[3:] + shlex.split(SMALL.format(demo_dir=cli_demo_dir))))
            continue
        line = re.sub(r"^python ", f"{sys.executable} ", line)
        if steps and steps[-1][0] == "bash":
            steps[-1] = ("bash", steps[-1][1] + "\n" + line)
        else:
            steps.append(("bash", line))
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"), "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    stdout = stderr = ""
    for kind, step in steps:
        if kind == "cli":
            result = run_cli_process(step, tmp_path, env, timeout=480)
        else:
            result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + step + "\n"], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=480)
        stdout, stderr = stdout + result.stdout, stderr + result.stderr
        assert result.returncode == 0, (stdout + stderr)[-4000:]
    output = stdout + stderr

    run = tmp_path / "logs" / "my_food" / "version_0"
    assert (run / "adapter" / "adapter_config.json").is_file()
    # Only the user's dataset is served: no demo data mixed in, and validation held out of train, said in the log.
    assert "my_food from" in output and "unifood from" not in output and "nutrition5k from" not in output
    assert "has no validation split" in output
    saved = json.loads((run / "test" / "results" / "test_results.json").read_text())
    assert set(saved["results"]) == {"my_food"}
    assert {"category_accuracy", "ingredient_iou"} <= set(saved["results"]["my_food"])
    assert saved["evaluated"] == "test split, adapter logs/my_food/version_0/adapter"
    # The table the example's last command prints is the one test wrote.
    assert "# test results: test split, adapter logs/my_food/version_0/adapter" in stdout
    assert "| my_food |" in stdout
