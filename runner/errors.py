"""Errors of the headless runner: each carries a readable message and the process exit status."""

from __future__ import annotations


class RunnerError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message, ``exit_code`` the process status."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(RunnerError):
    """Bad command line: a file that does not exist, a malformed --set."""

    exit_code = 2


class HostNotFoundError(RunnerError):
    """No ComfyUI checkout could be found or imported."""

    exit_code = 2


class ConversionError(RunnerError):
    """The UI-format workflow cannot be turned into an API prompt (unknown node type, broken link, ...)."""

    exit_code = 2


class OverrideError(RunnerError):
    """A --set/--image/--checkpoint override names an unknown node or input, or a value of the wrong type."""

    exit_code = 2


class ValidationError(RunnerError):
    """ComfyUI's own validation rejected the prompt."""

    exit_code = 3


class ExecutionError(RunnerError):
    """A node raised while the prompt ran."""

    exit_code = 4
