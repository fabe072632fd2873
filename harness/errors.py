"""Errors the user can fix. The CLI prints them without a traceback and exits with their status."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """A failure the user can act on (e.g. the disk is full); printed without a traceback, status 1."""

    exit_code = 1


class UserError(HarnessError):
    """Bad input: a scenario, a manifest, a command-line value, a results file. Status 2."""

    exit_code = 2


def did_you_mean(value: object, allowed: Iterable[object]) -> str:
    """' (did you mean 'x'?)' for the nearest allowed string, or ''."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
