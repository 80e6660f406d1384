"""Pydantic models of the REST API's JSON shapes (REST.md "JSON shapes").

The response models document what each route returns (the OpenAPI document is built
from them) and are checked against every response. Keys are flowserv's camelCase names;
optional keys are left out of a response rather than sent as ``null``, and extra keys
are kept (``extra="allow"``), so that a service can add to a shape without the server
dropping it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

RunStateName = Literal["PENDING", "RUNNING", "CANCELED", "ERROR", "SUCCESS"]


class ShapedRoute(APIRoute):
    """A route whose response leaves out the optional keys that the service left out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True
        super().__init__(*args, **kwargs)


class Shape(BaseModel):
    """Base of the response models: unknown keys are kept."""

    model_config = ConfigDict(extra="allow")


class Body(BaseModel):
    """Base of the request bodies: unknown keys are ignored (REST.md tolerance 6)."""

    model_config = ConfigDict(extra="ignore")


class ErrorMessage(Shape):
    """The body of every error response."""

    message: str


# --- service -----------------------------------------------------------------------


class Route(Shape):
    """One route of the service descriptor."""

    id: str
    pattern: str


class ServiceDescriptor(Shape):
    """Name, version, base URL and routes; ``username`` with a valid token."""

    name: str
    version: str
    url: str
    routes: list[Route]
    username: str | None = None


# --- users -------------------------------------------------------------------------


class User(Shape):
    """``{id, username}``; ``token`` only for the caller's own login."""

    id: str
    username: str
    token: str | None = None


class UserListing(Shape):
    """``{users: [User]}`` (never with tokens)."""

    users: list[User]


class PasswordRequest(Shape):
    """``{requestId}``."""

    requestId: str


class RegisterBody(Body):
    """``POST users/register``; without ``verify`` the user is active."""

    username: str
    password: str
    verify: bool = False


class LoginBody(Body):
    """``POST users/login``."""

    username: str
    password: str


class ActivateBody(Body):
    """``POST users/activate``."""

    id: str


class PasswordRequestBody(Body):
    """``POST users/password/request``."""

    username: str


class PasswordResetBody(Body):
    """``POST users/password/reset``."""

    requestId: str
    password: str


# --- workflows, groups, files ------------------------------------------------------


class Parameter(Shape):
    """A template parameter (``target``, ``range``, ``values`` by type)."""

    name: str
    dtype: str
    index: int
    isRequired: bool
    label: str | None = None
    help: str | None = None
    defaultValue: Any = None
    group: str | None = None


class ParameterGroup(Shape):
    """A group of parameters in a form."""

    name: str
    title: str
    index: int


class FileHandle(Shape):
    """An uploaded file; ``size`` is the real size in bytes."""

    id: str
    name: str
    createdAt: str
    size: int


class FileListing(Shape):
    """``{files: [FileHandle]}``."""

    files: list[FileHandle]


class GroupDescriptor(Shape):
    """``{id, name, workflow}``."""

    id: str
    name: str
    workflow: str


class GroupListing(Shape):
    """``{groups: [GroupDescriptor]}``."""

    groups: list[GroupDescriptor]


class Member(Shape):
    """A group member."""

    id: str
    username: str


class RunDescriptor(Shape):
    """``{id, state, createdAt}``."""

    id: str
    state: RunStateName
    createdAt: str


class RunListing(Shape):
    """``{runs: [RunDescriptor]}``."""

    runs: list[RunDescriptor]


class GroupHandle(GroupDescriptor):
    """A group with members, parameters, files and engine config."""

    members: list[Member]
    parameters: list[Parameter]
    files: list[FileHandle]
    config: dict[str, Any] | None = None
    runs: list[RunDescriptor] | None = None


class ResultFile(Shape):
    """A result file of a successful run."""

    id: str
    name: str
    title: str | None = None
    caption: str | None = None
    widget: Any = None
    format: Any = None


class RunHandle(RunDescriptor):
    """A run: arguments, timestamps and, once final, messages or result files."""

    workflowId: str
    groupId: str | None = None
    arguments: list[Any]
    parameters: list[Parameter] | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    messages: list[str] | None = None
    files: list[ResultFile] | None = None


class WorkflowDescriptor(Shape):
    """``{id, name, description?, instructions?}``."""

    id: str
    name: str
    description: str | None = None
    instructions: str | None = None


class WorkflowListing(Shape):
    """``{workflows: [WorkflowDescriptor]}``."""

    workflows: list[WorkflowDescriptor]


class WorkflowHandle(WorkflowDescriptor):
    """A workflow with parameters, post-processing run and the caller's groups."""

    parameters: list[Parameter]
    parameterGroups: list[ParameterGroup] | None = None
    outputs: list[dict[str, Any]] | None = None
    postproc: RunHandle | None = None
    groups: list[GroupDescriptor] | None = None


class Column(Shape):
    """A column of the result schema."""

    name: str
    label: str
    dtype: str


class RankedRunTimes(Shape):
    """The run of a leaderboard entry."""

    id: str
    createdAt: str
    startedAt: str | None = None
    finishedAt: str | None = None


class ResultValue(Shape):
    """One result value of a ranked run."""

    name: str
    value: Any


class RankedGroup(Shape):
    """The group of a leaderboard entry."""

    id: str
    name: str


class RankingEntry(Shape):
    """One ranked run with its group and results."""

    run: RankedRunTimes
    group: RankedGroup
    results: list[ResultValue]


class Leaderboard(Shape):
    """``{schema, ranking, postproc?}``."""

    schema_: list[Column] = Field(alias="schema")
    ranking: list[RankingEntry]
    postproc: RunHandle | None = None


class GroupCreateBody(Body):
    """``POST workflows/{id}/groups``; ``id``, ``parameters``, ``config`` as flowserv's client."""

    name: str
    members: list[str] | None = None
    parameters: list[dict[str, Any]] | None = None
    id: str | None = None
    config: dict[str, Any] | None = None


class GroupUpdateBody(Body):
    """``PUT`` (or ``POST``) ``groups/{id}``."""

    name: str | None = None
    members: list[str] | None = None


# --- runs --------------------------------------------------------------------------


class RunStartBody(Body):
    """``POST groups/{id}/runs``: ``arguments: [{name, value}]``."""

    arguments: list[dict[str, Any]] = Field(default_factory=list)
    config: dict[str, Any] | None = None


class CancelBody(Body):
    """``PUT runs/{id}``: an optional reason."""

    reason: str | None = None


class LogLine(Shape):
    """One captured line of a run's output."""

    pos: int
    step: str | None = None
    stream: str
    text: str


class RunLog(Shape):
    """A page of a run's log: ``next`` is the offset of the following page."""

    runId: str
    state: RunStateName
    lines: list[LogLine]
    next: int
