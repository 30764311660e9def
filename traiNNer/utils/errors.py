"""User-facing errors: one line, non-zero exit, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (config, paths, data) that stops the run.

    `train.py` and `test.py` print the message as a single line and exit with
    `exit_code`, without a traceback.
    """

    exit_code = 1


class ConfigError(UserError):
    """The option file is invalid; raised before anything runs or is written."""

    exit_code = 2


class DataError(UserError):
    """The images the options name are missing or unusable (a folder, a file, a size).

    Exit code 2 like a config mistake: the data is checked before anything is written.
    """

    exit_code = 2


class CheckpointError(UserError):
    """A weights file or training state the options name (path.pretrain_network_g,
    path.resume_state, or the state --auto_resume found) cannot be used: missing, not a
    checkpoint, truncated, refused as unsafe, or built for another network.

    Exit code 2 like a config mistake: checkpoints are read and checked against the
    network before the run's folder is created, so nothing has been written.
    """

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return '; did you mean X?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""
