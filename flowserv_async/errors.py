"""Errors raised by flowserv-async.

Every error is a :class:`FlowservError`; the families are those of flowserv::

    FlowservError
    ├── UnauthenticatedAccessError
    ├── UnauthorizedAccessError
    ├── EventsExpiredError
    ├── InvalidConfigurationError
    ├── MissingConfigurationError
    ├── ConstraintViolationError
    │   ├── DuplicateArgumentError
    │   ├── DuplicateUserError
    │   ├── InvalidArgumentError
    │   ├── InvalidManifestError
    │   ├── InvalidParameterError
    │   ├── InvalidRunStateError
    │   ├── InvalidTemplateError
    │   └── MissingArgumentError
    └── UnknownObjectError
        ├── UnknownFileError
        ├── UnknownParameterError
        ├── UnknownRequestError
        ├── UnknownRunError
        ├── UnknownUserError
        ├── UnknownWorkflowError
        └── UnknownWorkflowGroupError

The message is the single argument of the exception, so ``str()``, ``repr()`` and
pickling work for every class, including those whose constructor builds the message
from an identifier.
"""

from __future__ import annotations

from typing import Any


def _restore(cls: type[FlowservError], message: str) -> FlowservError:
    err = cls.__new__(cls)
    FlowservError.__init__(err, message)
    return err


class FlowservError(Exception):
    """Base class of every error raised by flowserv-async."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        """The error message."""
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.message))


class UnauthenticatedAccessError(FlowservError):
    """The caller is not authenticated (no user, or an invalid or expired token)."""

    def __init__(self, message: str = "not logged in") -> None:
        super().__init__(message)


class UnauthorizedAccessError(FlowservError):
    """The caller is authenticated but not allowed to do what it asked."""

    def __init__(self, message: str = "not authorized") -> None:
        super().__init__(message)


class EventsExpiredError(FlowservError):
    """Events after the requested position are gone: retention removed them."""


class InvalidConfigurationError(FlowservError):
    """A configuration value is malformed."""


class MissingConfigurationError(FlowservError):
    """A configuration value that is needed is absent."""


class ConstraintViolationError(FlowservError):
    """A value breaks a constraint of the data model or of a template."""


class DuplicateArgumentError(ConstraintViolationError):
    """An argument is given more than once for a run."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate argument '{name}'")


class DuplicateUserError(ConstraintViolationError):
    """A user name is taken."""

    def __init__(self, username: str) -> None:
        super().__init__(f"duplicate user '{username}'")


class InvalidArgumentError(ConstraintViolationError):
    """An argument value is malformed or does not convert to its parameter type."""


class InvalidManifestError(ConstraintViolationError):
    """A workflow manifest is malformed."""


class InvalidParameterError(ConstraintViolationError):
    """A parameter declaration is malformed."""


class InvalidRunStateError(ConstraintViolationError):
    """An operation is not allowed in the run's current state."""


class InvalidTemplateError(ConstraintViolationError):
    """A workflow template is malformed."""


class MissingArgumentError(ConstraintViolationError):
    """A required parameter has neither an argument nor a default value."""

    def __init__(self, name: str) -> None:
        super().__init__(f"missing argument for parameter '{name}'")


class UnknownObjectError(FlowservError):
    """An object that is referenced by its identifier does not exist."""

    def __init__(self, identifier: Any, type_name: str = "object") -> None:
        super().__init__(f"unknown {type_name} '{identifier}'")


class UnknownFileError(UnknownObjectError):
    """Unknown file."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "file")


class UnknownParameterError(UnknownObjectError):
    """Unknown template parameter."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "parameter")


class UnknownRequestError(UnknownObjectError):
    """Unknown or expired password reset request."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "request")


class UnknownRunError(UnknownObjectError):
    """Unknown run."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "run")


class UnknownUserError(UnknownObjectError):
    """Unknown user (also raised for a wrong password, to not reveal which it was)."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "user")


class UnknownWorkflowError(UnknownObjectError):
    """Unknown workflow."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "workflow")


class UnknownWorkflowGroupError(UnknownObjectError):
    """Unknown workflow group."""

    def __init__(self, identifier: Any) -> None:
        super().__init__(identifier, "workflow group")
