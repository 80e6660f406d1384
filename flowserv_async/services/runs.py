"""The runs service: start, watch, cancel and delete runs, download their results.

Run states change only through :mod:`flowserv_async.db.runstate`; the engine reports
through a :class:`~flowserv_async.engine.store.RunStore`
(:mod:`flowserv_async.services.runstore`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async._paths import relative_path
from flowserv_async._util import new_id, utc_now
from flowserv_async.db._statements import on_session
from flowserv_async.db.models import (
    Group,
    Ranking,
    Run,
    RunFile,
    RunLogLine,
    UploadedFile,
    Workflow,
)
from flowserv_async.db.runstate import NewRun, set_state
from flowserv_async.engine.config import load_engine_config
from flowserv_async.engine.job import ResultSpec, RunJob, result_files
from flowserv_async.engine.log import DEFAULT_MAX_LINES, ENGINE_STREAM, dropped_note
from flowserv_async.engine.spec import parse_workflow
from flowserv_async.engine.store import CANCELED_BY_USER, save_results
from flowserv_async.errors import (
    InvalidArgumentError,
    InvalidRunStateError,
    UnknownFileError,
    UnknownRunError,
    UnknownWorkflowGroupError,
)
from flowserv_async.events import changes
from flowserv_async.services import serialize
from flowserv_async.services.base import Service
from flowserv_async.services.postproc import start_postproc
from flowserv_async.services.reads import (
    GroupVersion,
    read_group_runs,
    read_group_version,
    read_run,
)
from flowserv_async.services.runstore import SessionRunStore
from flowserv_async.services.stored import run_prefix, static_prefix, template_of, upload_key
from flowserv_async.states import ACTIVE_STATES, RunState
from flowserv_async.template import (
    InputFile,
    ParameterIndex,
    WorkflowTemplate,
    input_files,
    parse_arguments,
    replace_references,
)
from flowserv_async.template.parameters import (
    FileParameter,
    ListParameter,
    Parameter,
    RecordParameter,
)
from flowserv_async.volume import DownloadHandle, StorageVolume, join_key

#: Lines that one ``get_log`` call returns by default, and at most.
LOG_PAGE = 1000
MAX_LOG_PAGE = 10_000


async def load_run_handle(session: AsyncSession, run: Run) -> dict[str, Any]:
    """The RunHandle of a run, with its result files and the outputs' display data."""
    files: list[RunFile] = []
    outputs: list[dict[str, Any]] | None = None
    parameters: list[dict[str, Any]] | None = None
    if run.state == RunState.SUCCESS:
        stmt = select(RunFile).where(RunFile.run_id == run.run_id).order_by(RunFile.key)
        files = list((await session.scalars(stmt)).all())
        wf = await session.get(Workflow, run.workflow_id)
        if wf is not None:
            outputs = _outputs_of(wf, run)
    if run.group_id is not None:
        group = await session.get(Group, run.group_id)
        parameters = list(group.parameters) if group is not None else None
    return serialize.run_handle(run, files=files, outputs=outputs, parameters=parameters)


def _outputs_of(wf: Workflow, run: Run) -> list[dict[str, Any]] | None:
    if run.group_id is None:
        spec = wf.postproc_spec or {}
        return list(spec.get("outputs") or []) or None
    return list(wf.outputs) if wf.outputs is not None else None


def _with_paths(value: Any) -> Any:
    """``value`` with every :class:`InputFile` (also in lists and records) as its target path.

    A reference to a file parameter (in ``files.inputs``, ``parameters`` or a command)
    means where the file is in the run folder.
    """
    if isinstance(value, InputFile):
        return value.target
    if isinstance(value, dict):
        return {key: _with_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_paths(item) for item in value]
    return value


def _file_slots(parameters: Iterable[Parameter]) -> set[str]:
    """The paths that file parameters declare (``target``, or the default path)."""
    slots: set[str] = set()
    for para in parameters:
        if isinstance(para, FileParameter):
            # Both were checked as relative paths when the parameter was declared.
            slots.update(relative_path(p) for p in (para.target, para.default) if p)
        elif isinstance(para, ListParameter):
            slots |= _file_slots([para.para])
        elif isinstance(para, RecordParameter):
            slots |= _file_slots(para.fields)
    return slots


async def _refuse_static_targets(
    volume: StorageVolume,
    workflow_id: str,
    parameters: ParameterIndex,
    inputs: Sequence[tuple[str, str]],
) -> None:
    """Refuse file arguments whose target would replace a file shipped with the template.

    Otherwise a participant could replace, say, the scoring code and rank anything. The
    paths a file parameter declares (its ``target`` or default) are the exception: there
    the template ships a default input meant to be replaced (flowserv's hello world).

    Raises:
        InvalidArgumentError: naming the target path and the template file.

    """
    prefix = static_prefix(workflow_id)
    static = [key[len(prefix) :].lstrip("/") for key in await volume.walk(prefix)]
    slots = _file_slots(parameters.values())
    for _, target in inputs:
        if target in slots:
            continue
        for path in static:
            if target == path or path.startswith(target + "/") or target.startswith(path + "/"):
                raise InvalidArgumentError(
                    f"file argument target '{target}' would overwrite the template file '{path}'"
                )


@dataclass(frozen=True)
class GroupTemplate:
    """What ``start_run`` needs of a group and its workflow, prepared once per version.

    Attributes:
        version: the workflow id and the ``created_at`` of the group and the workflow
            that it was prepared from (see :class:`~flowserv_async.services.reads.
            GroupVersion`).
        template: the workflow template with the group's workflow spec and parameters.
        parameters_json: the group's parameters as stored, for run handles (each
            handle gets its own copy).
        workflow_config, group_config: the stored engine configurations.
        ignore_postproc: the workflow's flag.

    """

    version: tuple[str, datetime, datetime]
    template: WorkflowTemplate
    parameters_json: str
    workflow_config: dict[str, Any] | None
    group_config: dict[str, Any] | None
    ignore_postproc: bool

    @classmethod
    def of(cls, group: Group, wf: Workflow) -> GroupTemplate:
        """Parse the template of a group as stored."""
        base = template_of(wf)
        template = WorkflowTemplate(
            workflow=dict(group.workflow_spec),
            parameters=ParameterIndex.from_list(group.parameters),
            parameter_groups=base.parameter_groups,
            outputs=base.outputs,
            result_schema=base.result_schema,
            postproc=base.postproc,
        )
        return cls(
            version=(wf.workflow_id, group.created_at, wf.created_at),
            template=template,
            parameters_json=json.dumps(group.parameters),
            workflow_config=wf.engine_config,
            group_config=group.engine_config,
            ignore_postproc=wf.ignore_postproc,
        )

    @property
    def workflow_id(self) -> str:
        """The group's workflow."""
        return self.version[0]


class GroupTemplates:
    """The prepared templates of the groups that runs were started for (at most ``size``).

    An entry is used only while the group's :class:`~flowserv_async.services.reads.
    GroupVersion` is the one it was prepared from, so a group or workflow deleted and
    created again under the same identifier is prepared anew.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: OrderedDict[str, GroupTemplate] = OrderedDict()

    def get(self, group_id: str, version: GroupVersion) -> GroupTemplate | None:
        """The group's prepared template if it is of this version, else None."""
        entry = self._entries.get(group_id)
        key = (version.workflow_id, version.group_created, version.workflow_created)
        if entry is None or entry.version != key:
            return None
        self._entries.move_to_end(group_id)
        return entry

    def put(self, group_id: str, entry: GroupTemplate) -> None:
        """Keep a prepared template (the least recently used one goes when full)."""
        self._entries[group_id] = entry
        self._entries.move_to_end(group_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


async def prepare_job(
    settings_engine_config: str | None,
    run_id: str,
    group_id: str,
    prepared: GroupTemplate,
    values: dict[str, Any],
    config: dict[str, Any] | None,
    input_keys: tuple[tuple[str, str], ...] = (),
) -> RunJob:
    """Validate and assemble everything the engine needs for a run (nothing is written).

    Raises:
        MissingArgumentError, InvalidArgumentError: references without values.
        InvalidTemplateError: a malformed workflow section.
        InvalidConfigurationError: a malformed engine configuration.

    """
    template = prepared.template
    values = _with_paths(values)
    section = replace_references(template.workflow, values, template.parameters)
    spec = parse_workflow(section)
    engine_config = await load_engine_config(
        settings_engine_config, prepared.workflow_config, prepared.group_config, config
    )
    context = {k: v for k, v in values.items() if k not in spec.parameters}
    workflow_id = prepared.workflow_id
    return RunJob(
        run_id=run_id,
        workflow_id=workflow_id,
        group_id=group_id,
        workflow=spec,
        context=context,
        static_prefix=static_prefix(workflow_id),
        result_prefix=run_prefix(workflow_id, run_id),
        input_files=input_keys,
        result_files=result_files(template.outputs, spec.outputs),
        config=engine_config,
        result_schema=template.result_schema,
        has_postproc=template.postproc is not None and not prepared.ignore_postproc,
    )


class RunService(Service):
    """Start, watch, cancel and delete runs, and download their results."""

    async def start_run(
        self, group_id: str, arguments: list[dict[str, Any]], config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start a run of the group's workflow with the given arguments.

        Everything is validated before anything is written. Work done earlier in the
        same session is committed first; the new run is then created by the run store
        (together with runs started at the same time, in one transaction) and committed
        before it is handed to the engine. With
        ``FLOWSERV_ASYNCENGINE=false`` the call returns once the run has ended; if the
        caller is cancelled meanwhile, the run is cancelled.

        Raises:
            UnknownWorkflowGroupError, UnauthorizedAccessError, UnauthenticatedAccessError.
            DuplicateArgumentError, UnknownParameterError, InvalidArgumentError,
            MissingArgumentError: bad arguments.
            UnknownFileError: a file argument that is no upload of the group.
            InvalidConfigurationError: a bad engine configuration.

        """
        # Validation reads before the write lock: on SQLite the lock is then held only
        # for the insert (concurrent starts queue on it). One statement tells whether
        # the group's template prepared earlier still holds.
        version = await self.ctx.read(read_group_version, group_id, self.ctx.user_id)
        if version is None:
            raise UnknownWorkflowGroupError(group_id)
        self.ctx.check_member(group_id, version.is_member)
        if config is not None and not isinstance(config, dict):
            raise InvalidArgumentError(f"run config must be a mapping, got {config!r}")
        prepared = await self._group_template(group_id, version)
        workflow_id = prepared.workflow_id
        parameters = prepared.template.parameters
        values = parse_arguments(parameters, arguments)
        inputs: list[tuple[str, str]] = []
        for item in input_files(values):
            upload = await self.session.get(UploadedFile, item.file_id)
            if upload is None or upload.group_id != group_id:
                raise UnknownFileError(item.file_id)
            inputs.append((upload_key(workflow_id, group_id, upload.file_id), item.target))
        if inputs:
            await _refuse_static_targets(self.ctx.factory.volume, workflow_id, parameters, inputs)
        run_id = new_id()
        job = await prepare_job(
            self.ctx.settings.engine_config,
            run_id,
            group_id,
            prepared,
            values,
            config,
            input_keys=tuple(inputs),
        )
        dispatch = self.ctx.factory.dispatch
        new = NewRun(
            run_id=run_id,
            workflow_id=workflow_id,
            group_id=group_id,
            arguments=_serializable(arguments),
            engine_id=dispatch.owner,
            created_at=utc_now(),
        )
        # The session's own work first; its connection is free while the run is written.
        await self.ctx.commit()
        await dispatch.create(new, job)
        run = Run(
            run_id=run_id,
            workflow_id=new.workflow_id,
            group_id=group_id,
            state=str(RunState.PENDING),
            created_at=new.created_at,
            arguments=new.arguments,
        )
        if self.ctx.settings.async_engine:
            return serialize.run_handle(run, parameters=json.loads(prepared.parameters_json))
        try:
            await dispatch.wait(run_id)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await dispatch.cancel(run_id, reason="the caller of start_run was cancelled")
            raise
        return await self.get_run(run_id)

    async def _group_template(self, group_id: str, version: GroupVersion) -> GroupTemplate:
        """The group's template, prepared anew only when the group or workflow changed."""
        templates = self.ctx.factory.group_templates
        prepared = templates.get(group_id, version)
        if prepared is not None:
            return prepared
        group = await self.session.get(Group, group_id)
        wf = await self.session.get(Workflow, version.workflow_id)
        if group is None or wf is None or group.workflow_id != wf.workflow_id:
            raise UnknownWorkflowGroupError(group_id)  # deleted since the first read
        prepared = GroupTemplate.of(group, wf)
        templates.put(group_id, prepared)
        return prepared

    async def get_run(self, run_id: str) -> dict[str, Any]:
        """Return the run handle (group runs: members only).

        Raises:
            UnknownRunError, UnauthorizedAccessError.

        """
        read = await self.ctx.read(read_run, run_id, self.ctx.user_id)
        if read is None:
            raise UnknownRunError(run_id)
        if read.group_id is not None:
            self.ctx.check_member(read.group_id, read.is_member)
        return read.handle

    async def list_runs(
        self,
        group_id: str,
        state: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> dict[str, Any]:
        """List a group's runs in creation order, optionally only those in ``state``.

        Raises:
            UnknownWorkflowGroupError, UnauthorizedAccessError, InvalidArgumentError (an
            unknown state).

        """
        states = None
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            for s in states:
                if s not in RunState.__members__:
                    raise InvalidArgumentError(f"unknown run state {s!r}")
        listed = await self.ctx.read(
            read_group_runs, group_id, self.ctx.user_id, states, limit, offset
        )
        if listed is None:
            raise UnknownWorkflowGroupError(group_id)
        self.ctx.check_member(group_id, listed.is_member)
        return {"runs": listed.runs}

    async def cancel_run(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        """Cancel an active run; its processes are gone when this returns.

        Like ``start_run``, this commits what the session did before it: the session
        gives its database connection back while the engine stops the run, so that
        any number of concurrent cancels never needs more connections than the pool has
        (the engine needs one to record CANCELED). The CANCELED state is committed too:
        the run is stopped whatever the rest of the block does, and the session holds
        no write lock that the engine's next record would wait for.

        Raises:
            UnknownRunError, UnauthorizedAccessError.
            InvalidRunStateError: the run is not PENDING or RUNNING.

        """
        run = await self._readable(run_id, write=True)
        if run.state not in ACTIVE_STATES:
            raise InvalidRunStateError(f"run '{run_id}' is {run.state}, not active")
        message = reason if reason is not None else CANCELED_BY_USER
        await self.ctx.commit()
        # The engine that executes the run (maybe in another process) records CANCELED
        # (with the reason) in its own session once the run's processes are gone.
        await self.ctx.factory.dispatch.cancel(run_id, message)
        await self.ctx.begin_write()
        if not await on_session(self.session, set_state, run_id, RunState.CANCELED, [message]):
            await self.session.refresh(run)
            if run.state != RunState.CANCELED:
                raise InvalidRunStateError(f"run '{run_id}' is {run.state}, not active")
        await self.ctx.commit()
        await self.session.refresh(run)
        return await load_run_handle(self.session, run)

    async def delete_run(self, run_id: str) -> None:
        """Delete a run that is not active, with its files (removed after the commit).

        Raises:
            UnknownRunError, UnauthorizedAccessError.
            InvalidRunStateError: the run is PENDING or RUNNING.

        """
        run = await self._readable(run_id, write=True)
        await self.ctx.begin_write()
        await self.session.refresh(run)
        if run.state in ACTIVE_STATES:
            raise InvalidRunStateError(f"run '{run_id}' is {run.state}: cancel it first")
        await self.session.execute(
            update(Workflow)
            .where(Workflow.postproc_run_id == run_id)
            .values(postproc_run_id=None)
            .execution_options(synchronize_session=False)
        )
        ranked = await self.session.scalar(select(Ranking.run_id).where(Ranking.run_id == run_id))
        if ranked is not None:
            changes.ranking_changed(self.session.sync_session, run.workflow_id, run_id, "deleted")
        await self.session.delete(run)
        await self.session.flush()
        factory = self.ctx.factory
        volume, prefix = factory.volume, run_prefix(run.workflow_id, run_id)
        self.ctx.after_commit.append(lambda: volume.delete(prefix))
        if ranked is not None:
            # The ranking changed: post-process the runs that remain ranked.
            job = await start_postproc(
                self.session,
                run.workflow_id,
                factory.engine.engine_id,
                self.ctx.settings.engine_config,
            )
            if job is not None:
                postproc = job

                async def hand_over() -> None:
                    await factory.engine.start(postproc)

                self.ctx.after_commit.append(hand_over)

    async def get_result_file(self, run_id: str, file_id: str) -> DownloadHandle:
        """Return a download handle for one result file of a successful run.

        Raises:
            UnknownRunError, UnauthorizedAccessError, UnknownFileError.

        """
        run = await self._readable(run_id, download=True)
        row = await self.session.get(RunFile, file_id)
        if row is None or row.run_id != run_id:
            raise UnknownFileError(file_id)
        key = join_key(run_prefix(run.workflow_id, run_id), row.key)
        return await DownloadHandle.from_key(
            self.ctx.factory.volume, key, name=row.name.rsplit("/", 1)[-1]
        )

    async def get_result_archive(self, run_id: str) -> DownloadHandle:
        """Return a download handle streaming ``run.{id}.tar.gz`` of the run's files.

        Raises:
            UnknownRunError: no such run, or the run is not SUCCESS.
            UnauthorizedAccessError.

        """
        run = await self._readable(run_id, download=True)
        if run.state != RunState.SUCCESS:
            raise UnknownRunError(run_id)
        return await result_archive(self.session, self.ctx.factory.volume, run)

    async def get_log(self, run_id: str, offset: int = 0, limit: int = LOG_PAGE) -> dict[str, Any]:
        """Return ``{runId, state, lines: [{pos, step, stream, text}], next}``.

        Lines are captured while the run goes, so this works for RUNNING runs too. At
        most ``limit`` lines (up to :data:`MAX_LOG_PAGE`) come back; ask again from
        ``next`` for more. The stored log keeps the tail of a run's output within
        ``FLOWSERV_MAX_LOG_SIZE`` bytes: a page that starts before the oldest kept line
        begins with an ``engine`` line that says how many lines were dropped.

        Raises:
            UnknownRunError, UnauthorizedAccessError, InvalidArgumentError (bad offset
            or limit).

        """
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise InvalidArgumentError(f"log offset must be a non-negative integer: {offset!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_LOG_PAGE:
            raise InvalidArgumentError(
                f"log limit must be an integer from 1 to {MAX_LOG_PAGE}: {limit!r}"
            )
        run = await self._readable(run_id)
        stmt = (
            select(RunLogLine)
            .where(RunLogLine.run_id == run_id, RunLogLine.pos >= offset)
            .order_by(RunLogLine.pos)
            .limit(limit)
        )
        rows = (await self.session.scalars(stmt)).all()
        lines = [{"pos": r.pos, "step": r.step, "stream": r.stream, "text": r.text} for r in rows]
        first = rows[0].pos if rows else None
        if first is not None and first > offset:
            lines.insert(
                0,
                {
                    "pos": offset,
                    "step": None,
                    "stream": ENGINE_STREAM,
                    "text": dropped_note(
                        first - offset, DEFAULT_MAX_LINES, self.ctx.settings.max_log_size
                    ),
                },
            )
        next_pos = rows[-1].pos + 1 if rows else offset
        return {"runId": run_id, "state": run.state, "lines": lines, "next": next_pos}

    async def update_run(
        self,
        run_id: str,
        state: str,
        runstore: str | Path | None = None,
        messages: Sequence[str] | None = None,
        files: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Engine callback (no authorization): apply a state transition.

        On SUCCESS the result ``files`` (default: the workflow's outputs) are copied
        from the local folder ``runstore`` into the run's folder of the file store and
        the results are read. A transition that is not allowed is ignored.

        Raises:
            UnknownRunError: no such run.
            InvalidArgumentError: an unknown state, or SUCCESS without ``runstore``.

        """
        try:
            target = RunState(state)
        except ValueError:
            raise InvalidArgumentError(f"unknown run state {state!r}") from None
        run = await self.session.get(Run, run_id)
        if run is None:
            raise UnknownRunError(run_id)
        await self.ctx.begin_write()
        store = SessionRunStore(self.session, self.ctx.settings.engine_config)
        if target != RunState.SUCCESS:
            await store.finish(run_id, target, messages or ())
        else:
            if runstore is None:
                raise InvalidArgumentError("update_run: SUCCESS needs the runstore folder")
            spec = await self._result_spec(run, files)
            factory = self.ctx.factory
            volume = factory.volume
            self.ctx.on_rollback.append(lambda: volume.delete(spec.prefix))
            postproc = await save_results(
                store, volume, Path(runstore), spec, factory.engine.engine_id
            )
            if postproc is not None:
                job = postproc

                async def hand_over() -> None:
                    await factory.engine.start(job)

                self.ctx.after_commit.append(hand_over)
        await self.session.refresh(run)
        return await load_run_handle(self.session, run)

    async def _result_spec(self, run: Run, files: Sequence[str] | None) -> ResultSpec:
        """What a run reported through :meth:`update_run` keeps when it succeeds."""
        wf = await self.session.get(Workflow, run.workflow_id)
        assert wf is not None, "runs are deleted with their workflow"
        template = template_of(wf)
        if run.group_id is None:
            postproc = template.postproc
            assert postproc is not None, "post-processing runs exist for such workflows"
            section, outputs, schema = postproc.workflow, postproc.outputs, None
        else:
            section, outputs, schema = template.workflow, template.outputs, template.result_schema
        declared = (section.get("files") or {}).get("outputs") or []
        return ResultSpec(
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            group_id=run.group_id,
            prefix=run_prefix(run.workflow_id, run.run_id),
            files=tuple(files) if files is not None else result_files(outputs, declared),
            schema=schema,
            has_postproc=template.postproc is not None and not wf.ignore_postproc,
        )

    async def _readable(self, run_id: str, write: bool = False, download: bool = False) -> Run:
        """The run, if the caller may see it (act on it: ``write``; download its files)."""
        # The engine changes runs in its own sessions: never trust the identity map.
        run = await self.session.get(Run, run_id, populate_existing=True)
        if run is None:
            raise UnknownRunError(run_id)
        if run.group_id is not None:
            if download:
                await self.ctx.require_downloader(run.group_id)
            else:
                await self.ctx.require_member(run.group_id)
        elif write:
            await self.ctx.require_admin()
        return run


async def result_archive(session: AsyncSession, volume: StorageVolume, run: Run) -> DownloadHandle:
    """A streamed ``run.{id}.tar.gz`` of a run's result files."""
    stmt = select(RunFile.key).where(RunFile.run_id == run.run_id).order_by(RunFile.key)
    keys = (await session.scalars(stmt)).all()
    prefix = run_prefix(run.workflow_id, run.run_id)
    return await DownloadHandle.from_archive(
        volume, [(join_key(prefix, k), k) for k in keys], name=f"run.{run.run_id}.tar.gz"
    )


def _serializable(arguments: Any) -> list[Any]:
    """The arguments as submitted, as JSON (they were validated already)."""
    doc: list[Any] = json.loads(json.dumps(arguments, default=str))
    return doc
