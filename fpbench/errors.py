"""The errors fpbench raises on purpose (bad input, not bugs). Ground floor: imports nothing of ours.

Every module that raises or catches one imports it from here, so imports point one way.
"""

from __future__ import annotations


class FpbenchError(Exception):
    """Base class of the errors fpbench raises on purpose (bad input, not bugs)."""


class ConfigError(FpbenchError, ValueError):
    """A configuration value is unknown or out of range; the message names the field and the fix."""


class UnknownName(ConfigError):
    """An unknown method/transform/zoo/... name; the message lists the valid ones."""


class QueryBudgetExceeded(FpbenchError):
    """A method asked a suspect for more inputs than its declared ``query_budget``."""


class AccessViolation(FpbenchError):
    """A method asked a suspect for more than its declared access level allows (e.g. weights of a black box)."""


class NotApplicable(FpbenchError):
    """A transform cannot apply to a model, or a method cannot score a pair; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PipelineMismatch(FpbenchError):
    """A model's accuracy through the query pipeline differs from the accuracy measured when it was built."""


def require(cond: bool, field_name: str, message: str) -> None:
    """Raise a ConfigError naming ``field_name`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(f"invalid parameter '{field_name}': {message}")
