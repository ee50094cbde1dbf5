"""The command line's output: information on stdout, warnings and errors on stderr, one copy of this package's
information under DDP, Lightning's advertising dropped; and importing the command line prints nothing. In a fresh
process, as ``python -m rode_lightning`` finds logging (pytest configures the root logger of its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]

SCRIPT = """
import rode_lightning.estimate  # the whole command line: nothing it imports may print (warnings, log lines)
import logging
from lightning.fabric.utilities.rank_zero import rank_zero_only
import lightning.pytorch  # its loggers print to stderr by handlers of their own until configure_console
from rode_lightning.console import configure_console

configure_console()
configure_console()  # a second call adds nothing: every line below is printed once
ours = logging.getLogger("rode_lightning.data.sources")
lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
rank_zero_only.rank = 0
ours.info("serving unifood")
lightning.info("GPU available: False, used: False")
lightning.info("TPU available: False, using: 0 TPU cores")
lightning.info("💡 Tip: install something")
ours.warning("a root looks odd")
logging.info("a library's root-level message, below the root's WARNING")
rank_zero_only.rank = 1
ours.info("serving unifood on rank 1")
ours.warning("rank 1 skipped a file")
logging.getLogger("lightning.fabric.utilities.distributed").info("MEMBER: 2/2")
"""


def test_information_goes_to_stdout_once_and_warnings_to_stderr():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["serving unifood", "GPU available: False, used: False", "MEMBER: 2/2"]
    assert result.stderr.splitlines() == ["warning: a root looks odd", "warning: rank 1 skipped a file"]
