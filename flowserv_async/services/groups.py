"""The groups service: user groups (submissions) of a workflow and their members."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from flowserv_async._util import new_id, validate_identifier, validate_name
from flowserv_async.db.models import Group, GroupMember, Run, UploadedFile, User, Workflow
from flowserv_async.db.runstate import is_in
from flowserv_async.errors import (
    ConstraintViolationError,
    UnknownUserError,
    UnknownWorkflowError,
    UnknownWorkflowGroupError,
)
from flowserv_async.events.store import members_changed
from flowserv_async.services import serialize
from flowserv_async.services.base import Executor, Service
from flowserv_async.services.reads import MemberRow, read_groups
from flowserv_async.services.stored import group_prefix, template_of
from flowserv_async.states import ACTIVE_STATES
from flowserv_async.volume import join_key


def _member_list(members: Any) -> list[Any]:
    if members is None:
        return []
    if not isinstance(members, list | tuple):
        raise ConstraintViolationError(f"members must be a list of user ids, got {members!r}")
    return list(members)


class GroupService(Service):
    """Create, read, update and delete the groups of a workflow."""

    async def create_group(
        self,
        workflow_id: str,
        name: str,
        members: list[str] | None = None,
        parameters: list[dict[str, Any]] | None = None,
        engine_config: dict[str, Any] | None = None,
        identifier: str | None = None,
    ) -> dict[str, Any]:
        """Create a group; the caller is always a member.

        The group keeps a copy of the workflow spec and of its parameters, extended or
        overridden by ``parameters``; ``engine_config`` defaults to the workflow's.

        Raises:
            UnauthenticatedAccessError: the caller is anonymous.
            UnknownWorkflowError: no such workflow.
            ConstraintViolationError: bad identifier, blank/long/taken name, bad config.
            UnknownUserError: a member who is not an active user.
            InvalidTemplateError, InvalidParameterError: bad parameter declarations.

        """
        user_id = self.ctx.require_user()
        if identifier is not None:
            validate_identifier(identifier)
        group_name = validate_name(name, "group")
        if engine_config is not None and not isinstance(engine_config, dict):
            raise ConstraintViolationError(f"engine_config must be a mapping: {engine_config!r}")
        wanted = _wanted_users([user_id, *_member_list(members)])
        # The checks read before the write lock is taken (one call; a concurrent
        # create of the same name still fails on the unique constraint).
        wf, found, taken = await self.ctx.read(_read_new_group, workflow_id, wanted, group_name)
        if wf is None:
            raise UnknownWorkflowError(workflow_id)
        merged = template_of(wf).merge_parameters(parameters or [])
        users = _in_order(wanted, found)
        if taken:
            raise _name_taken_error(group_name)
        await self.ctx.begin_write()
        group_id = identifier or new_id()
        if identifier is not None and await self.session.get(Group, identifier) is not None:
            raise ConstraintViolationError(f"group '{identifier}' exists")
        group = Group(
            group_id=group_id,
            workflow_id=workflow_id,
            name=group_name,
            owner_id=user_id,
            workflow_spec=wf.workflow_spec,
            parameters=merged.to_list(),
            engine_config=engine_config if engine_config is not None else wf.engine_config,
        )
        self.session.add(group)
        self.session.add_all(GroupMember(group_id=group_id, user_id=u) for u in users)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            # Read outside the failed transaction: the workflow may have gone meanwhile.
            if await self.ctx.factory.db.read(_read_workflow, workflow_id) is None:
                raise UnknownWorkflowError(workflow_id) from exc
            raise ConstraintViolationError(
                f"group '{group_name}' or identifier '{group_id}' exists"
            ) from exc
        # A new group: its members are known, and it has no files and no runs yet.
        listed = sorted(users.items(), key=lambda item: item[1])
        return serialize.group_handle(group, [MemberRow(u, n) for u, n in listed], [], [])

    async def get_group(self, group_id: str) -> dict[str, Any]:
        """Return the group handle; files and runs are shown to members only.

        Raises:
            UnknownWorkflowGroupError: no such group.

        """
        group = await self._get(group_id)
        return await self._handle(group, with_private=await self.ctx.is_member(group_id))

    async def list_groups(
        self, workflow_id: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """List the caller's groups (all groups for an anonymous caller)."""
        groups = await self.ctx.read(read_groups, workflow_id, self.ctx.user_id, limit, offset)
        return {"groups": groups}

    async def update_group(
        self, group_id: str, name: str | None = None, members: list[str] | None = None
    ) -> dict[str, Any]:
        """Rename a group or replace its members (members only).

        Raises:
            UnknownWorkflowGroupError: no such group.
            UnauthorizedAccessError: the caller is not a member.
            ConstraintViolationError: blank, long or taken name; empty member list.
            UnknownUserError: a member who is not an active user.

        """
        await self.ctx.begin_write()
        group = await self._get(group_id)
        await self.ctx.require_member(group_id)
        if name is not None:
            new_name = validate_name(name, "group")
            if new_name != group.name:
                await self._check_name_free(group.workflow_id, new_name)
                group.name = new_name
        if members is not None:
            if not members:
                raise ConstraintViolationError("a group needs at least one member")
            member_ids = list(await self._active_users(_member_list(members)))
            await self.session.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
            self.session.add_all(GroupMember(group_id=group_id, user_id=u) for u in member_ids)
            members_changed(self.session)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise ConstraintViolationError(f"group name '{name}' is taken") from exc
        return await self._handle(group, with_private=True)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group with its runs, uploads and files (members only).

        Active runs are cancelled and files removed once the deletion is committed.

        Raises:
            UnknownWorkflowGroupError: no such group.
            UnauthorizedAccessError: the caller is not a member.

        """
        await self.ctx.begin_write()
        group = await self._get(group_id)
        await self.ctx.require_member(group_id)
        active = await self.session.scalars(
            select(Run.run_id).where(Run.group_id == group_id, Run.state.in_(ACTIVE_STATES))
        )
        run_ids = list(active.all())
        # Runs of other processes (a database queue) are stopped there.
        await self.ctx.factory.dispatch.forward_cancels(self.session, run_ids)
        run_keys = [
            join_key(group.workflow_id, "runs", r)
            for r in (
                await self.session.scalars(select(Run.run_id).where(Run.group_id == group_id))
            ).all()
        ]
        await self.session.delete(group)
        await self.session.flush()
        members_changed(self.session)
        factory, prefix = self.ctx.factory, group_prefix(group.workflow_id, group_id)

        async def clean_up() -> None:
            for run_id in run_ids:
                await factory.engine.cancel_run(run_id)
            for key in [prefix, *run_keys]:
                await factory.volume.delete(key)

        self.ctx.after_commit.append(clean_up)

    async def _get(self, group_id: str) -> Group:
        group = await self.session.get(Group, group_id)
        if group is None:
            raise UnknownWorkflowGroupError(group_id)
        return group

    async def _check_name_free(self, workflow_id: str, name: str) -> None:
        if await self.ctx.read(_name_is_taken, workflow_id, name):
            raise _name_taken_error(name)

    async def _active_users(self, user_ids: Iterable[Any]) -> dict[str, str]:
        """The names of the given users, in the given order; all must be active."""
        wanted = _wanted_users(user_ids)
        return _in_order(wanted, await self.ctx.read(_read_active_users, wanted))

    async def _handle(self, group: Group, with_private: bool) -> dict[str, Any]:
        members = (
            await self.session.scalars(
                select(User)
                .join(GroupMember, GroupMember.user_id == User.user_id)
                .where(GroupMember.group_id == group.group_id)
                .order_by(User.name)
            )
        ).all()
        files: list[UploadedFile] = []
        runs: list[Run] | None = None
        if with_private:
            files = list(
                (
                    await self.session.scalars(
                        select(UploadedFile)
                        .where(UploadedFile.group_id == group.group_id)
                        .order_by(UploadedFile.created_at, UploadedFile.file_id)
                    )
                ).all()
            )
            runs = list(
                (
                    await self.session.scalars(
                        select(Run)
                        .where(Run.group_id == group.group_id)
                        .order_by(Run.created_at, Run.run_id)
                    )
                ).all()
            )
        return serialize.group_handle(group, list(members), files, runs)


_WORKFLOWS = Workflow.__table__.c
_WORKFLOW_ROW = select(*_WORKFLOWS).where(_WORKFLOWS.workflow_id == bindparam("workflow_id"))
_USERS = User.__table__.c
_ACTIVE_USERS = select(_USERS.user_id, _USERS.name).where(
    is_in(_USERS.user_id, "user_ids"), _USERS.active.is_(True)
)
_GROUPS = Group.__table__.c
_NAME_TAKEN = select(_GROUPS.group_id).where(
    _GROUPS.workflow_id == bindparam("workflow_id"), _GROUPS.name == bindparam("name")
)


def _read_workflow(executor: Executor, workflow_id: str) -> Workflow | None:
    """The workflow's columns as a detached object (no session loads it), or None."""
    row = executor.execute(_WORKFLOW_ROW, {"workflow_id": workflow_id}).first()
    return None if row is None else Workflow(**row._asdict())


def _read_active_users(executor: Executor, user_ids: list[str]) -> dict[str, str]:
    """Names of those of the users that are active."""
    rows = executor.execute(_ACTIVE_USERS, {"user_ids": json.dumps(user_ids)}).all()
    return {row.user_id: row.name for row in rows}


def _name_is_taken(executor: Executor, workflow_id: str, name: str) -> bool:
    params = {"workflow_id": workflow_id, "name": name}
    return executor.execute(_NAME_TAKEN, params).first() is not None


def _read_new_group(
    executor: Executor, workflow_id: str, user_ids: list[str], name: str
) -> tuple[Workflow | None, dict[str, str], bool]:
    """What creating a group checks: the workflow, the active members, the name."""
    wf = _read_workflow(executor, workflow_id)
    if wf is None:
        return None, {}, False
    return (
        wf,
        _read_active_users(executor, user_ids),
        _name_is_taken(executor, workflow_id, name),
    )


def _wanted_users(user_ids: Iterable[Any]) -> list[str]:
    """The user ids without repeats, in order; a non-string id is an unknown user."""
    wanted = list(dict.fromkeys(user_ids))
    for user_id in wanted:
        if not isinstance(user_id, str):
            raise UnknownUserError(user_id)
    return wanted


def _in_order(wanted: list[str], found: Mapping[str, str]) -> dict[str, str]:
    """``{id: name}`` of the wanted users in order; UnknownUserError for one not found."""
    for user_id in wanted:
        if user_id not in found:
            raise UnknownUserError(user_id)
    return {user_id: found[user_id] for user_id in wanted}


def _name_taken_error(name: str) -> ConstraintViolationError:
    return ConstraintViolationError(f"group name '{name}' is taken for this workflow")
