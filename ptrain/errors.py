"""Exceptions for mistakes a user can make; the CLI prints them as one line, without a traceback."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class PtrainError(Exception):
    """Base class: the message names the culprit (file, key, column, row) and the fix."""


class ConfigError(PtrainError):
    pass


class DataError(PtrainError):
    pass


class ModelError(PtrainError):
    pass


class CheckpointError(PtrainError):
    pass


class TrainingError(PtrainError):
    """The run cannot go on (non-finite losses); the message names the step and what to change."""


class LaunchError(PtrainError):
    """The launched processes did not form the process group the user asked for."""


class SweepError(PtrainError):
    """A sweep grid or a runs listing the user asked for cannot be made; the message says what to change."""


class RunInUseError(PtrainError):
    """A live process trains in the run folder (or runs the sweep point); `owner` is its marker (pid, host, ...)."""

    def __init__(self, message: str, owner: dict | None = None):
        super().__init__(message)
        self.owner = owner or {}


class OutputError(PtrainError):
    """A file of the run could not be written (a full disk, a read-only folder); not a usage error: exit code 1."""

    exit_code = 1
