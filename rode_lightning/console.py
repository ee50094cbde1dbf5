"""Where the command line prints what: information on stdout, warnings and errors on stderr.

A run's information (which data is served, the data summary, Lightning's "GPU available" lines, the results tables)
goes to standard output, so that standard error holds only what needs attention: warnings, and for a user's
mistake the one ``error:`` line (``cli.run_command_line``). ``python -m rode_lightning fit ... 2>errors.txt`` then
gives a file that is empty when all went well.

Python's logging is configured the way an application does it, on the root logger, so that every library's
records meet the same handler: Lightning's own loggers (which print to stderr through handlers of their own when
nothing is configured) are made to pass their records on instead, and a library that would call
``logging.basicConfig`` on its first message (``rouge_score`` through absl does) finds logging configured already.
A script that configured logging itself is left alone.
"""

from __future__ import annotations

import logging
import sys
import warnings

from lightning.fabric.utilities.rank_zero import rank_zero_only

_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class _ConsoleHandler(logging.StreamHandler):
    """Records below WARNING to stdout, the others to stderr; the stream is looked up for every record, so that a
    redirection made after setup (pytest's capture) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        super().emit(record)


class _ConsoleFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def _information_on_rank_zero(record: logging.LogRecord) -> bool:
    """Under DDP every process sets up its data: one copy of this package's information lines is enough; warnings
    from any rank are shown, and Lightning decides for its own lines (each process says it joined the run)."""
    ours = record.name == "rode_lightning" or record.name.startswith("rode_lightning.")
    return not ours or record.levelno >= logging.WARNING or getattr(rank_zero_only, "rank", 0) == 0


class _WithoutAdvertising(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing ..." lines, which advertise services and say nothing about
    the run, and its "TPU available: False" line (this tool runs on CPUs and GPUs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("💡 Tip") or message.startswith("TPU available: False"))


_WITHOUT_ADVERTISING = _WithoutAdvertising()


def configure_console() -> None:
    """Set up the command line's output (see the module docstring); calling it again changes nothing."""
    # Lightning 2.6 calls a torch.utils._pytree function that torch 2.14 deprecates: a message for Lightning's
    # developers, printed on every run, that a user can do nothing about.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_WITHOUT_ADVERTISING)
    root = logging.getLogger()
    if any(isinstance(handler, _ConsoleHandler) for handler in root.handlers):
        return
    if root.handlers:
        return  # configured by the script that runs us
    handler = _ConsoleHandler()
    handler.setFormatter(_ConsoleFormat("%(message)s"))
    handler.addFilter(_information_on_rank_zero)
    root.addHandler(handler)
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for own in [handler for handler in logger.handlers if type(handler) is logging.StreamHandler]:
            logger.removeHandler(own)
        logger.propagate = True
    logging.getLogger("rode_lightning").setLevel(logging.INFO)
