"""The error tree: one base, flowserv's families, messages that survive pickling."""

from __future__ import annotations

import pickle

import pytest

from flowserv_async import errors


def all_errors() -> list[type[errors.FlowservError]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.FlowservError)
    ]


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_message_str_repr_and_pickle(cls: type[errors.FlowservError]) -> None:
    try:
        err = cls("xyz")  # type: ignore[call-arg]
    except TypeError:
        err = cls()  # type: ignore[call-arg]
    assert str(err) == err.message
    assert repr(err).startswith(cls.__name__)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls and str(copy) == str(err) and copy.args == err.args


def test_families() -> None:
    assert issubclass(errors.DuplicateUserError, errors.ConstraintViolationError)
    assert issubclass(errors.InvalidRunStateError, errors.ConstraintViolationError)
    assert issubclass(errors.UnknownWorkflowGroupError, errors.UnknownObjectError)
    assert str(errors.UnknownRunError("r1")) == "unknown run 'r1'"
    assert str(errors.MissingArgumentError("p")) == "missing argument for parameter 'p'"
