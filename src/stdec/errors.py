"""The one exception type users see: a clear sentence naming the bad value and the fix."""

__all__ = ["StdecError"]


class StdecError(ValueError):
    """Bad input to a stdec entry point. The message is one sentence meant for the user."""
