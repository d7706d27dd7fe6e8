"""Errors that the command line reports as one paragraph and a non-zero exit code."""


class HcaeError(Exception):
    """A problem with the user's input (a file, a folder, an option) that the message explains.

    The message names the value at fault and what to do next; the command line prints it without a
    traceback and exits with status 2.
    """


class DataError(HcaeError):
    """A dataset file is missing, corrupt or malformed."""


class RunConfigError(HcaeError, ValueError):
    """A run, study or evaluation setting is invalid."""
