"""The one exception type users see.

Library code raises :class:`MhoError` (or a subclass) with a one-line, actionable message;
the CLI turns it into ``error: <message>`` and a non-zero exit, never a traceback.
"""


class MhoError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class AudioError(MhoError):
    """Audio that cannot be used: missing, unreadable, empty, too long or at the wrong rate."""


class ConfigError(MhoError):
    """A malformed or inconsistent configuration."""
