"""Errors metahp raises. Every message says what is wrong and how to fix it."""


class MetaHPError(ValueError):
    """Base class of metahp's errors (a ValueError, so callers that catch bad input keep working)."""


class ConfigError(MetaHPError):
    """An invalid name, option, candidate grid or trainer setting."""


class InputError(MetaHPError):
    """Bad batch data: shapes that disagree, NaN or infinite values, an empty batch."""


class StateError(MetaHPError):
    """A state dict that does not belong to this policy (other grid, knob or updater) or is malformed."""
