"""A user's mistake is told from a bug by its type: :class:`UserError` (and its file-flavoured kinds) ends the
command in one ``error:`` line and exit status 2; a plain ``ValueError`` or ``OSError``, which a bug raises too
(a shape error inside torch, an internal check), keeps its traceback."""

from __future__ import annotations

import pytest

from rode_lightning.data.errors import DataFormatError, MissingSplitError
from rode_lightning.experiments.grid import GridError
from rode_lightning.user_errors import (EXIT_STATUS, ExistingFileError, MissingFileError, UserError,
                                        reported_in_one_line)
from tests.conftest import tiny_cli_args


@pytest.fixture(autouse=True)
def _no_traceback_switch(monkeypatch):
    monkeypatch.delenv("RODE_TRACEBACK", raising=False)


@pytest.mark.parametrize("error", [UserError("data.val_fraction: 1.5 is not in (0, 1)"),
                                   MissingFileError("model.tokenizer: /nowhere holds no tokenizer"),
                                   ExistingFileError("/tmp/x holds ['images'] but no marker"),
                                   DataFormatError("train.jsonl:9: malformed JSON"),
                                   GridError("grid.yaml: seeds must be a non-empty list"),
                                   PermissionError(13, "Permission denied", "/srv/logs/demo")])
def test_a_user_error_ends_in_one_line_and_exit_status_2(error, capsys):
    with pytest.raises(SystemExit) as stop:
        with reported_in_one_line():
            raise error
    assert stop.value.code == EXIT_STATUS
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {error}"), lines


@pytest.mark.parametrize("bug", [ValueError("shapes (3, 4) and (5, 6) cannot be multiplied"),
                                 FileNotFoundError("/tmp/the-cache/part-0 vanished"), OSError("disk I/O error"),
                                 KeyError("weight")])
def test_a_bug_keeps_its_traceback(bug, capsys):
    """Not turned into SystemExit: the interpreter prints the traceback and exits with status 1."""
    with pytest.raises(type(bug)) as raised:
        with reported_in_one_line():
            raise bug
    assert raised.value is bug
    assert capsys.readouterr().err == ""


def test_the_traceback_switch_shows_a_user_error_as_it_is(monkeypatch):
    monkeypatch.setenv("RODE_TRACEBACK", "1")
    with pytest.raises(UserError, match="adapter.ranks"):
        with reported_in_one_line():
            raise UserError("adapter.ranks: the list of expert ranks is empty")


def test_the_file_kinds_are_still_what_their_callers_catch():
    missing = MissingFileError("--ckpt_path /nowhere/last.ckpt does not exist")
    assert isinstance(missing, FileNotFoundError) and isinstance(missing, OSError)
    assert isinstance(missing, UserError) and isinstance(missing, ValueError)
    assert str(missing) == "--ckpt_path /nowhere/last.ckpt does not exist"  # not OSError's "[Errno ...]" form
    assert isinstance(ExistingFileError("x"), FileExistsError)
    assert issubclass(MissingSplitError, MissingFileError) and issubclass(MissingSplitError, FileNotFoundError)
    assert issubclass(DataFormatError, UserError) and issubclass(GridError, UserError)


def test_a_missing_file_the_package_checks_is_a_user_error(tmp_path):
    """One of the package's own checks, end to end: the tokenizer folder named by the user is missing."""
    from rode_lightning.data.tokenizer import load_tokenizer

    with pytest.raises(MissingFileError, match="model.tokenizer"):
        load_tokenizer(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("raised, expected", [(ValueError("bug: an internal check failed"), ValueError),
                                              (UserError("data.predict.source: a mistake"), SystemExit)])
def test_the_command_line_tells_a_bug_from_a_mistake(raised, expected, tmp_path, cli_demo_dir, monkeypatch,
                                                     capfd):
    """``python -m rode_lightning fit`` in this process, with the data module's setup (called by ``Trainer.fit``)
    raising: a plain ValueError comes out of the command line as it is, traceback and all; a UserError raised at
    the same point ends in one line and exit status 2."""
    from rode_lightning.cli import run_command_line
    from rode_lightning.data.datamodule import FoodDataModule

    def setup(self, stage=None):
        raise raised

    monkeypatch.setattr(FoodDataModule, "setup", setup)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(expected) as outcome:
        run_command_line(["fit", *tiny_cli_args(cli_demo_dir, tmp_path / "logs"), "--trainer.max_steps", "1"])
    errors = capfd.readouterr().err
    if expected is SystemExit:
        assert outcome.value.code == EXIT_STATUS
        assert errors.strip().splitlines()[-1].startswith(f"error: {raised}")
    else:
        assert outcome.value is raised
        assert "error: " not in errors
