"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and exit code 2; anything else is an internal error.
"""


class BadInput(Exception):
    """Unknown task or method, malformed file line, bad config value, missing data file."""


class InUse(BadInput):
    """A run phase or results folder another live process holds (harness.locks)."""

    def __init__(self, message: str, directory):
        super().__init__(message)
        self.directory = directory


class Stopped(Exception):
    """Training stopped on request (SIGTERM or SIGUSR1: a scheduler's preemption or time limit) after
    saving a checkpoint of the step it had finished; the same command resumes from it. Exit code 143."""
