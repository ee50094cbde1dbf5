"""What produced a result: the command and the versions of the libraries that decide the numbers.

Every results JSON and the demo base's ``build.json`` carry this, so that a figure can be traced to the command
and the library set it came from (``constraints.txt`` pins the set the README's figures were measured with).
"""

from __future__ import annotations

import platform
import shlex
import sys
from importlib import metadata

LIBRARIES: tuple[str, ...] = ("torch", "torchvision", "lightning", "transformers", "tokenizers", "peft",
                              "open_clip_torch", "torchmetrics", "sacrebleu", "rouge-score", "scikit-learn", "numpy",
                              "pillow", "safetensors", "jsonargparse")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def command_line() -> str:
    """The command as typed (``python -m rode_lightning test ...``), quoted for a shell."""
    arguments = list(sys.argv)
    if arguments and arguments[0].endswith(("rode_lightning/__main__.py", "rode_lightning\\__main__.py")):
        arguments[0:1] = ["python", "-m", "rode_lightning"]
    return shlex.join(arguments)


def provenance() -> dict:
    return {"command": command_line(), "versions": library_versions(), "platform": platform.platform()}
