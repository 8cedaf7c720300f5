"""Errors a user can act on. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class AugforgeError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

    exit_code = 1


class UsageError(AugforgeError):
    """A wrong option, parameter or value on the command line or in a study file."""

    exit_code = 2


class UnknownStrategyError(UsageError, KeyError):
    """No strategy of that name is registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PluginError(AugforgeError):
    """A plugin failed while registering, or registered something invalid."""


class DataError(AugforgeError):
    """A dataset could not be read, or its content is not usable."""
