"""The error every command line turns into a one-line message and a non-zero exit."""


class BlastscopeError(Exception):
    """A user-facing error: its message names the bad value and the fix."""
