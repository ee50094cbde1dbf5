"""How every dataset reader reports bad input.

Every dataset reader shares one policy so that the data module can treat them alike: a record that cannot be used
either stops the run with a :class:`DataFormatError` naming the file and line (``on_error="raise"``), or is left out
and counted by reason in a :class:`SkipCounter` (``on_error="skip"``). It is never dropped silently and never
reaches a data-loader worker, where the failure would surface far from its cause. The reader contract
(``tests/data/test_reader_contract.py``) holds every registered dataset to it.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, get_args

from rode_lightning.user_errors import MissingFileError, UserError

OnError = Literal["raise", "skip"]


class DataFormatError(UserError):
    """A data file does not follow its documented format.

    Messages start with a short reason followed by a colon and the detail (``"bad nutrition value: fat_g is -3 ..."``);
    :func:`skip_reason` relies on that to group skip counts by cause.
    """


class SkipCounter(Counter):
    """Counts skipped samples by reason, so the data module can report them."""

    def report(self) -> str:
        return ", ".join(f"{count} x {reason}" for reason, count in sorted(self.items())) or "none"


def skip_reason(error: Exception) -> str:
    """The kind of problem without the sample-specific detail, so that skip counts group by cause."""
    return str(error).split(":")[0]


def check_on_error(on_error: str) -> None:
    """Refuse an unknown mode up front: a typo must not silently mean "skip"."""
    if on_error not in get_args(OnError):
        raise UserError(f"on_error={on_error!r}: expected one of {list(get_args(OnError))}")


def report_bad_record(error: DataFormatError, location: str, on_error: OnError, skipped: SkipCounter,
                      source: str) -> None:
    """Apply the policy to one unusable record: raise it with its ``file:line`` (``raise``), or count it in
    ``skipped`` under ``<source>: <error type>: <reason>`` (``skip``)."""
    if on_error == "raise":
        raise DataFormatError(f"{location}: {error}") from None
    skipped[f"{source}: {type(error).__name__}: {skip_reason(error)}"] += 1


class MissingSplitError(MissingFileError):
    """A dataset has no file for a split. The data module serves the other datasets' share of that split, and
    refuses only a stage that needs the split and finds it in no dataset (``test`` without any test file)."""
