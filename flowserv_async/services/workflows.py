"""The workflows service: install, read, update and delete workflow templates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flowserv_async._util import new_id, validate_identifier, validate_name
from flowserv_async.db.models import Run, RunFile, Workflow
from flowserv_async.engine.spec import normalize_path
from flowserv_async.errors import (
    ConstraintViolationError,
    InvalidManifestError,
    UnknownFileError,
    UnknownRunError,
    UnknownWorkflowError,
)
from flowserv_async.events.store import members_changed
from flowserv_async.services import serialize
from flowserv_async.services.base import Executor, Service, paged
from flowserv_async.services.ranking import (
    WORKFLOW_COLUMNS,
    leaderboard,
    ranked_runs,
    ranked_with_workflow,
    remember_schema,
    schema_text,
    sort_columns,
    stored_schema,
)
from flowserv_async.services.reads import read_run, read_workflow
from flowserv_async.services.runs import result_archive
from flowserv_async.services.stored import run_prefix, static_prefix
from flowserv_async.states import ACTIVE_STATES, RunState
from flowserv_async.template import WorkflowTemplate, load_template
from flowserv_async.template.manifest import Manifest, read_manifest
from flowserv_async.volume import DownloadHandle, join_key

# How often create_workflow chooses a free name again after losing a race for it.
_INSERT_ATTEMPTS = 10


def _resolve_source(source: Any, repository: str | None) -> tuple[Path, str | None]:
    """A local folder, or the folder of a key in the repository index (no network).

    Returns the folder and the manifest file named by the repository entry, if any.
    """
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return path, None
    text = str(source)
    if "://" in text:
        raise InvalidManifestError(
            f"cannot install from {text!r}: only local folders (and repository keys that"
            " name local folders) are supported"
        )
    if repository is not None:
        try:
            entries = json.loads(Path(repository).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidManifestError(f"cannot read repository index {repository!r}") from exc
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == text:
                url = str(entry.get("url", ""))
                folder = Path(url.removeprefix("file://"))
                if not folder.is_absolute():
                    folder = Path(repository).parent / folder
                if not folder.is_dir():
                    raise InvalidManifestError(
                        f"repository entry {text!r} points to {url!r}, which is no local folder"
                    )
                manifest = entry.get("manifest")
                if manifest is not None and not isinstance(manifest, str):
                    raise InvalidManifestError(
                        f"repository entry {text!r}: manifest must be a path, got {manifest!r}"
                    )
                return folder, manifest
    raise InvalidManifestError(f"workflow source {text!r} is neither a folder nor a known key")


def _relative(path: str) -> str:
    if Path(path).is_absolute():
        raise InvalidManifestError(f"repository manifest {path!r} must be a relative path")
    return path


def _prepare(
    source: Any, repository: str | None, **options: Any
) -> tuple[Manifest, WorkflowTemplate]:
    folder, entry_manifest = _resolve_source(source, repository)
    if options.get("manifestfile") is None and entry_manifest is not None:
        # The entry's manifest is a path in the source: it must stay inside it.
        options["manifestfile"] = _relative(entry_manifest)
    manifest = read_manifest(folder, **options)
    template = load_template(manifest.specfile, manifest.specfile.parent)
    _check_declared_files(template.workflow)
    return manifest, template


def _check_declared_files(workflow: Mapping[str, Any]) -> None:
    """Refuse declared files that leave the run folder, unless a parameter decides them.

    The workflow is parsed in full only when a run starts (its references need the
    arguments), but a literal path that escapes is wrong for every run.
    """
    sections = [("workflow", workflow.get("files"))]
    steps = workflow.get("steps")
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, Mapping):
            sections.append((f"step '{step.get('name', index)}'", step.get("files")))
    for where, files in sections:
        if not isinstance(files, Mapping):
            continue
        for kind in ("inputs", "outputs"):
            paths = files.get(kind)
            for path in paths if isinstance(paths, list) else []:
                if isinstance(path, str) and "$[[" not in path:
                    normalize_path(path, f"{where} files.{kind}")


class WorkflowService(Service):
    """Install, list, read, update and delete workflows."""

    async def create_workflow(
        self,
        source: Any,
        identifier: str | None = None,
        name: str | None = None,
        description: str | None = None,
        instructions: str | None = None,
        specfile: str | None = None,
        manifestfile: str | None = None,
        engine_config: dict[str, Any] | None = None,
        ignore_postproc: bool = False,
    ) -> dict[str, Any]:
        """Install a workflow from a local folder or a repository key (SPEC 5.5).

        Raises:
            InvalidManifestError: bad source, manifest, or missing name or specfile.
            InvalidTemplateError, InvalidParameterError, UnknownParameterError: bad
                template.
            ConstraintViolationError: bad or taken identifier, or a file that leaves the
                source folder.

        """
        await self.ctx.require_admin()
        if identifier is not None:
            validate_identifier(identifier)
        if name is not None:
            name = validate_name(name, "workflow")
        if engine_config is not None and not isinstance(engine_config, dict):
            raise ConstraintViolationError(f"engine_config must be a mapping: {engine_config!r}")
        manifest, template = await anyio.to_thread.run_sync(
            lambda: _prepare(
                source,
                self.ctx.settings.repository,
                manifestfile=manifestfile,
                name=name,
                description=description,
                instructions=instructions,
                specfile=specfile,
            )
        )
        await self.ctx.begin_write()
        if identifier is not None and await self.session.get(Workflow, identifier) is not None:
            raise ConstraintViolationError(f"workflow '{identifier}' exists")
        workflow_id = identifier or new_id()
        doc = template.to_dict()
        wanted = validate_name(manifest.name, "workflow")
        for attempt in range(1, _INSERT_ATTEMPTS + 1):
            wf = Workflow(
                workflow_id=workflow_id,
                name=await self._unique_name(wanted),
                description=manifest.description,
                instructions=manifest.instructions,
                workflow_spec=doc["workflow"],
                parameters=doc["parameters"],
                parameter_groups=doc.get("parameterGroups"),
                outputs=doc.get("outputs"),
                result_schema=doc.get("results"),
                postproc_spec=doc.get("postproc"),
                ignore_postproc=bool(ignore_postproc),
                engine_config=engine_config,
            )
            try:
                # A savepoint, so that losing a race keeps the transaction usable.
                async with self.session.begin_nested():
                    self.session.add(wf)
                break
            except IntegrityError as exc:
                if identifier is not None and await self._exists(identifier):
                    raise ConstraintViolationError(f"workflow '{identifier}' exists") from exc
                if attempt == _INSERT_ATTEMPTS:
                    raise ConstraintViolationError(
                        f"cannot find a free workflow name for '{wanted}'"
                    ) from exc
                # A concurrent install took the name since it was chosen: choose again.
        volume = self.ctx.factory.volume
        prefix = static_prefix(workflow_id)
        self.ctx.on_rollback.append(lambda: volume.delete(workflow_id))
        await volume.copy_from_local(manifest.source, prefix, manifest.files)
        return serialize.workflow_handle(wf, groups=[])

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Return the workflow handle, with the caller's groups and the postproc run.

        Raises:
            UnknownWorkflowError: no such workflow.

        """
        handle = await self.ctx.read(read_workflow, workflow_id, self.ctx.user_id)
        if handle is None:
            raise UnknownWorkflowError(workflow_id)
        return handle

    async def list_workflows(
        self, limit: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """List workflows in creation order."""
        stmt = paged(
            select(Workflow).order_by(Workflow.created_at, Workflow.workflow_id), limit, offset
        )
        workflows = (await self.session.scalars(stmt)).all()
        return {"workflows": [serialize.workflow_descriptor(wf) for wf in workflows]}

    async def update_workflow(
        self,
        workflow_id: str,
        name: str | None = None,
        description: str | None = None,
        instructions: str | None = None,
    ) -> dict[str, Any]:
        """Change a workflow's name (validated, unique), description or instructions.

        Raises:
            UnknownWorkflowError: no such workflow.
            ConstraintViolationError: a blank, too long or taken name.

        """
        await self.ctx.require_admin()
        await self.ctx.begin_write()
        wf = await self._get(workflow_id)
        if name is not None:
            new_name = validate_name(name, "workflow")
            if new_name != wf.name:
                taken = await self.session.scalar(
                    select(Workflow.workflow_id).where(Workflow.name == new_name)
                )
                if taken is not None:
                    raise ConstraintViolationError(f"workflow name '{new_name}' is taken")
                wf.name = new_name
        for what, value in (("description", description), ("instructions", instructions)):
            if value is not None and not isinstance(value, str):
                raise ConstraintViolationError(f"workflow {what} must be a string, got {value!r}")
        if description is not None:
            wf.description = description
        if instructions is not None:
            wf.instructions = instructions
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise ConstraintViolationError(f"workflow name '{name}' is taken") from exc
        return await self.get_workflow(workflow_id)

    async def delete_workflow(self, workflow_id: str) -> None:
        """Delete a workflow with its groups, uploads, runs and files.

        Active runs are cancelled and files removed once the deletion is committed.

        Raises:
            UnknownWorkflowError: no such workflow.

        """
        await self.ctx.require_admin()
        await self.ctx.begin_write()
        wf = await self._get(workflow_id)
        active = await self.session.scalars(
            select(Run.run_id).where(Run.workflow_id == workflow_id, Run.state.in_(ACTIVE_STATES))
        )
        run_ids = list(active.all())
        # Runs of other processes (a database queue) are stopped there.
        await self.ctx.factory.dispatch.forward_cancels(self.session, run_ids)
        # The workflow row points at its post-processing run and the run at the
        # workflow: break the cycle first so that every backend can delete in order.
        wf.postproc_run_id = None
        await self.session.flush()
        await self.session.delete(wf)
        await self.session.flush()
        members_changed(self.session)  # its groups are gone
        factory = self.ctx.factory

        async def clean_up() -> None:
            for run_id in run_ids:
                await factory.engine.cancel_run(run_id)
            await factory.volume.delete(workflow_id)

        self.ctx.after_commit.append(clean_up)

    async def get_ranking(
        self, workflow_id: str, order_by: Any = None, include_all: bool = False
    ) -> dict[str, Any] | None:
        """Return the workflow's leaderboard, or None when it has no result schema.

        ``order_by`` is ``[{name, sortDesc?}]`` (default: the template's order); missing
        values sort last; without ``include_all`` only the best run of each group.

        Raises:
            UnknownWorkflowError: no such workflow.
            InvalidArgumentError: an unknown column or malformed ``order_by``.

        """
        return await self.ctx.read(
            _read_leaderboard, workflow_id, order_by, include_all, self.ctx.user_id
        )

    async def get_result_archive(self, workflow_id: str) -> DownloadHandle:
        """Stream the files of the current post-processing run as a tar.gz archive.

        Raises:
            UnknownWorkflowError: no such workflow.
            UnknownRunError: there is no successful post-processing run.

        """
        run = await self._postproc_run(workflow_id)
        return await result_archive(self.session, self.ctx.factory.volume, run)

    async def get_result_file(self, workflow_id: str, file_id: str) -> DownloadHandle:
        """Return a download handle for a file of the current post-processing run.

        Raises:
            UnknownWorkflowError, UnknownRunError, UnknownFileError.

        """
        run = await self._postproc_run(workflow_id)
        row = await self.session.get(RunFile, file_id)
        if row is None or row.run_id != run.run_id:
            raise UnknownFileError(file_id)
        return await DownloadHandle.from_key(
            self.ctx.factory.volume,
            join_key(run_prefix(workflow_id, run.run_id), row.key),
            name=row.name.rsplit("/", 1)[-1],
        )

    async def _postproc_run(self, workflow_id: str) -> Run:
        wf = await self._get(workflow_id)
        run = None
        if wf.postproc_run_id is not None:
            run = await self.session.get(Run, wf.postproc_run_id, populate_existing=True)
        if run is None or run.state != RunState.SUCCESS:
            raise UnknownRunError(f"post-processing of workflow {workflow_id}")
        return run

    async def _unique_name(self, name: str) -> str:
        stmt = select(Workflow.name).where(Workflow.name.startswith(name, autoescape=True))
        taken = set((await self.session.scalars(stmt)).all())
        candidate, count = name, 0
        while candidate in taken:
            count += 1
            candidate = f"{name} ({count})"
        # The suffix may push a long name over the limit (as flowserv, check again).
        return validate_name(candidate, "workflow")

    async def _exists(self, workflow_id: str) -> bool:
        return await self.session.get(Workflow, workflow_id) is not None

    async def _get(self, workflow_id: str) -> Workflow:
        wf = await self.session.get(Workflow, workflow_id)
        if wf is None:
            raise UnknownWorkflowError(workflow_id)
        return wf


def _read_leaderboard(
    executor: Executor,
    workflow_id: str,
    order_by: Any,
    include_all: Any,
    user_id: str | None,
) -> dict[str, Any] | None:
    """The leaderboard (see ``get_ranking``): in one statement when the schema was seen."""
    found = ranked_with_workflow(executor, workflow_id, order_by, include_all)
    if found is not None:
        schema, postproc_run_id, rows = found
    else:
        wf = executor.execute(WORKFLOW_COLUMNS, {"workflow_id": workflow_id}).first()
        if wf is None:
            raise UnknownWorkflowError(workflow_id)
        text = schema_text(wf.result_schema)
        if text is None:
            return None
        remember_schema(workflow_id, text)
        schema = stored_schema(text)
        order = sort_columns(schema, order_by)
        rows = ranked_runs(executor, workflow_id, schema, order, include_all)
        postproc_run_id = wf.postproc_run_id
    postproc = None
    if postproc_run_id is not None:
        read = read_run(executor, postproc_run_id, user_id)
        postproc = read.handle if read is not None else None
    return leaderboard(schema, rows, postproc)
