"""The local API: :class:`LocalAPIFactory`, its sessions, and engine selection."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import anyio
from sqlalchemy.orm import Session

from flowserv_async.api import API
from flowserv_async.config import (
    DATABASE_QUEUE,
    DEFAULT_USER,
    FLOWSERV_ACCESS_TOKEN,
    Settings,
    merge_env,
)
from flowserv_async.controller import EngineContext, EngineLimits, WorkflowController
from flowserv_async.db import DB, init_db
from flowserv_async.db.models import GroupMember
from flowserv_async.dispatch import RunDispatch
from flowserv_async.dispatch.database import DatabaseQueue
from flowserv_async.engine.controller import AsyncioEngine
from flowserv_async.engine.job import RunJob
from flowserv_async.engine.store import CANCELED_BY_USER
from flowserv_async.errors import (
    FlowservError,
    InvalidConfigurationError,
    MissingConfigurationError,
    UnknownRunError,
)
from flowserv_async.events import Event, EventFilter, EventHub, EventStream, EventType, hub_of
from flowserv_async.events.hub import MEMBERSHIP_RECHECK
from flowserv_async.events.store import has_pending
from flowserv_async.events.webhooks import WebhookDispatcher, WebhookStats, load_targets
from flowserv_async.services.base import ServiceContext, translate_errors
from flowserv_async.services.postproc import resume_postproc
from flowserv_async.services.reads import read_run
from flowserv_async.services.runs import GroupTemplates
from flowserv_async.services.runstore import DatabaseRunStore
from flowserv_async.services.users import authenticate
from flowserv_async.states import FINAL_STATES, RunState
from flowserv_async.volume import StorageVolume, volume_from_spec

logger = logging.getLogger(__name__)


class FactoryState(StrEnum):
    """Where a :class:`LocalAPIFactory` is in its lifespan.

    NEW: constructed, or released after a one-off session (it opens again on demand).
    OPEN: database, file store and engine are open. CLOSED: closed for good.
    """

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def init_backend(api: LocalAPIFactory) -> WorkflowController:
    """Return the workflow controller configured for a factory.

    ``FLOWSERV_BACKEND_MODULE`` and ``FLOWSERV_BACKEND_CLASS`` both set: that class,
    instantiated as ``cls(service=api)``; neither set: the default engine.

    Raises:
        MissingConfigurationError: only one of the two variables is set.
        InvalidConfigurationError: the module or class cannot be loaded.

    """
    module_name, class_name = api.settings.backend_module, api.settings.backend_class
    if module_name is None and class_name is None:
        return AsyncioEngine(service=api)
    if module_name is None or class_name is None:
        missing = "FLOWSERV_BACKEND_MODULE" if module_name is None else "FLOWSERV_BACKEND_CLASS"
        raise MissingConfigurationError(f"{missing} must be set with the other backend variable")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidConfigurationError(
            f"cannot load workflow engine {module_name}.{class_name}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, WorkflowController)):
        raise InvalidConfigurationError(f"{module_name}.{class_name} is not a WorkflowController")
    return cls(service=api)


class LocalAPIFactory:
    """Opens API sessions on a database, a file store and a workflow engine.

    Construction does no I/O. Resources are opened by :meth:`open` and released by
    :meth:`aclose`; the factory is an async context manager::

        async with LocalAPIFactory(env={"FLOWSERV_API_DIR": "./data"}) as factory:
            async with factory() as api:
                await api.users().register_user("alice", "secret")

    Args:
        env: configuration values; they win over the process environment.
        db: an already created database (it stays open when the factory closes).
        engine: a workflow controller; default: :func:`init_backend`.
        user_id: the default user of the factory's sessions.

    """

    def __init__(
        self,
        env: Mapping[str, Any] | None = None,
        db: DB | None = None,
        engine: WorkflowController | None = None,
        user_id: str | None = None,
    ) -> None:
        self._env = merge_env(env)
        self.settings = Settings.from_env(self._env)
        self.user_id = user_id
        self._db = db
        self._owns_db = db is None
        self._engine = engine
        self._owns_engine = engine is None
        self._state = FactoryState.NEW
        self._explicit = False
        self._active_sessions = 0
        self._volume: StorageVolume | None = None
        self._store: DatabaseRunStore | None = None
        self._lock: anyio.Lock | None = None
        self._hub: EventHub | None = None
        self._webhooks: WebhookDispatcher | None = None
        self._dispatch: RunDispatch | None = None
        #: Group templates prepared by ``start_run`` (parsed once per group version).
        self.group_templates = GroupTemplates()

    @property
    def env(self) -> Mapping[str, Any]:
        """The effective configuration values (read-only)."""
        return MappingProxyType(self._env)

    @property
    def db(self) -> DB:
        """The open database."""
        if self._db is None or self._state == FactoryState.CLOSED:
            raise FlowservError(f"the API factory is {self._state}: it has no database")
        return self._db

    @property
    def engine(self) -> WorkflowController:
        """The open workflow controller."""
        self._check_open()
        assert self._engine is not None
        return self._engine

    @property
    def dispatch(self) -> RunDispatch:
        """Who executes new runs: this process's engine, or the database queue."""
        self._check_open()
        assert self._dispatch is not None
        return self._dispatch

    @property
    def volume(self) -> StorageVolume:
        """The open file store."""
        if self._volume is None or self._state == FactoryState.CLOSED:
            raise FlowservError(f"the API factory is {self._state}: it has no file store")
        return self._volume

    @property
    def webhooks(self) -> list[WebhookStats]:
        """Delivery counts per ``FLOWSERV_WEBHOOKS`` target (empty without webhooks)."""
        return list(self._webhooks.stats) if self._webhooks is not None else []

    @property
    def state(self) -> FactoryState:
        """Where the factory is in its lifespan."""
        return self._state

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`aclose`."""
        return self._state == FactoryState.OPEN

    def _check_open(self) -> None:
        if self._state != FactoryState.OPEN:
            raise FlowservError(f"the API factory is {self._state}, not open")

    async def open(self) -> None:
        """Open the database and the engine; idempotent and safe to call concurrently."""
        await self._open(explicit=True)

    async def _open(self, explicit: bool) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if explicit:
                self._explicit = True
            if self._state == FactoryState.OPEN:
                return
            if self._state == FactoryState.CLOSED:
                raise FlowservError("the API factory is closed")
            self._volume = await volume_from_spec(self.settings.filestore or self.settings.api_dir)
            if self._db is None:
                self._db = await init_db(self._env)
            settings = self.settings
            hub = hub_of(
                self._db,
                keep=settings.events_keep,
                poll_interval=settings.events_poll,
                buffer_size=settings.events_buffer,
            )
            await hub.open()
            store = DatabaseRunStore(self._db, settings.engine_config)
            await store.open()
            engine_open = False
            try:
                if settings.webhooks:
                    webhooks = WebhookDispatcher(hub, await load_targets(settings.webhooks))
                    await webhooks.open()
                    self._webhooks = webhooks
                if self._engine is None:
                    self._engine = init_backend(self)
                engine = self._engine
                dispatch = self._run_dispatch(engine, store, hub, claim=explicit)
                await engine.open(self._engine_context(store, self._volume))
                engine_open = True
                await dispatch.open()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    if engine_open:
                        await engine.aclose()
                    if self._webhooks is not None:
                        await self._webhooks.aclose()
                        self._webhooks = None
                    await store.aclose()
                    await hub.aclose()
                    await self._volume.aclose()
                    if self._owns_db:
                        await self._db.dispose()
                        self._db = None
                raise
            self._hub = hub
            self._store = store
            self._dispatch = dispatch
            self._state = FactoryState.OPEN
            if explicit:
                await self._resume_postproc(self._db, self._engine)

    async def _resume_postproc(self, db: DB, engine: WorkflowController) -> None:
        """Start again the post-processing runs that the last shutdown cancelled.

        Only for a lifespan (explicit open): a factory opened for one session closes
        right after it, which would cancel them again.
        """
        try:
            async with db.write_session() as session:
                jobs = await resume_postproc(session, engine.engine_id, self.settings.engine_config)
            for job in jobs:
                await engine.start(job)
        except Exception:
            logger.exception("cannot resume post-processing runs")

    def _run_dispatch(
        self, engine: WorkflowController, store: DatabaseRunStore, hub: EventHub, claim: bool
    ) -> RunDispatch:
        """The dispatch of ``FLOWSERV_RUN_QUEUE``.

        Only a lifespan (explicit open) claims queued runs: a factory opened for one
        session closes right after it, which would cancel what it claimed.
        """
        if self.settings.run_queue == DATABASE_QUEUE:
            limits = EngineLimits.from_settings(self.settings)
            return DatabaseQueue(engine, store, self.db, hub, limits, claim=claim)
        return RunDispatch(engine, store)

    def _engine_context(self, store: DatabaseRunStore, volume: StorageVolume) -> EngineContext:
        settings = self.settings
        return EngineContext(
            store=store,
            volume=volume,
            runsdir=Path(settings.api_dir, "tmp", "runs"),
            limits=EngineLimits.from_settings(settings),
        )

    async def aclose(self) -> None:
        """Stop the engine (active runs are cancelled), then close the database."""
        await self._close(final=True)

    async def _close(self, final: bool) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            was_open = self._state == FactoryState.OPEN
            self._state = FactoryState.CLOSED if final else FactoryState.NEW
            if not was_open:
                return
            with anyio.CancelScope(shield=True):
                try:
                    if self._dispatch is not None:
                        await self._dispatch.aclose()
                        self._dispatch = None
                    if self._engine is not None:
                        await self._engine.aclose()
                finally:
                    if self._webhooks is not None:
                        await self._webhooks.aclose()
                        self._webhooks = None
                    if self._store is not None:
                        await self._store.aclose()
                        self._store = None
                    if self._hub is not None:
                        await self._hub.aclose()
                        self._hub = None
                    if self._owns_db and self._db is not None:
                        await self._db.dispose()
                        self._db = None
                    if self._owns_engine:
                        self._engine = None
                    if self._volume is not None:
                        await self._volume.aclose()

    async def _session_started(self) -> None:
        if self._state != FactoryState.OPEN:
            await self._open(explicit=False)
        self._active_sessions += 1

    async def _session_ended(self) -> None:
        self._active_sessions -= 1
        if not self._explicit and self._active_sessions == 0:
            # Opened for a one-off session (``async with LocalAPIFactory(env)() as api``):
            # release what it opened. Background work needs an explicit lifespan.
            await self._close(final=False)

    @asynccontextmanager
    async def _lease(self) -> AsyncIterator[WorkflowController]:
        """The open engine for one call; a factory that was not open is released after."""
        if self._state == FactoryState.CLOSED:
            raise FlowservError("the API factory is closed")
        await self._session_started()
        try:
            yield self.engine
        finally:
            with anyio.CancelScope(shield=True):
                await self._session_ended()

    async def __aenter__(self) -> LocalAPIFactory:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __call__(
        self, user_id: str | None = None, access_token: str | None = None
    ) -> SessionManager:
        """Return a session manager: ``async with factory() as api:``."""
        if self._state == FactoryState.CLOSED:
            raise FlowservError("the API factory is closed")
        return SessionManager(self, user_id=user_id, access_token=access_token)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in and keep the token as the factory's ``FLOWSERV_ACCESS_TOKEN``."""
        async with self() as api:
            user = await api.users().login_user(username, password)
        self._set_token(user["token"])
        return user

    async def logout(self) -> None:
        """Invalidate and forget the factory's access token (no-op when there is none)."""
        token = self.settings.access_token
        if token is None:
            return
        async with self() as api:
            await api.users().logout_user(token)
        self._set_token(None)

    def _set_token(self, token: str | None) -> None:
        if token is None:
            self._env.pop(FLOWSERV_ACCESS_TOKEN, None)
        else:
            self._env[FLOWSERV_ACCESS_TOKEN] = token
        self.settings = dataclasses.replace(self.settings, access_token=token)

    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a run, in whichever process executes it; its engine records CANCELED."""
        async with self._lease():
            await self.dispatch.cancel(run_id, reason or CANCELED_BY_USER)

    async def wait_run(
        self,
        run_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the spec's signature
    ) -> dict[str, Any]:
        """Return the run handle once the run is in a final state.

        A run that this factory's engine executes is awaited in the engine (then read
        once). Other runs are waited for on their events (:meth:`events`), so runs of
        other processes that share the database end the wait as soon as their end is
        committed (PostgreSQL) or seen (SQLite, ``FLOWSERV_EVENTS_POLL``).

        Raises:
            UnknownRunError: no such run.
            TimeoutError: the run did not end within ``timeout`` seconds.

        """
        async with self._lease() as engine:
            assert self._hub is not None
            with anyio.fail_after(timeout):
                # A run of this engine: its end is known without watching the events.
                if await engine.wait(run_id):
                    handle = await self._final_handle(run_id)
                    if handle is not None:
                        return handle
                # Subscribed before the state is read: an end committed in between is seen.
                async with self._hub.stream(EventFilter(run_id=run_id)) as stream:
                    if await self._final_handle(run_id) is None:
                        async for event in stream:
                            if (
                                event.type == EventType.RUN_STATE
                                and event.data["state"] in FINAL_STATES
                            ):
                                break
                # A run of this engine: also wait until its processes, log and folder
                # are done with (returns at once for other runs).
                await engine.wait(run_id)
                handle = await self._final_handle(run_id)
                assert handle is not None, "a final state is never left"
                return handle

    async def _final_handle(self, run_id: str) -> dict[str, Any] | None:
        """The run's handle if it is in a final state, else None."""
        read = await self.db.read(read_run, run_id, None)
        if read is None:
            raise UnknownRunError(run_id)
        return read.handle if read.handle["state"] in FINAL_STATES else None

    def events(
        self,
        *,
        run_id: str | None = None,
        group_id: str | None = None,
        workflow_id: str | None = None,
        after: int | None = None,
        user_id: str | None = None,
        access_token: str | None = None,
    ) -> EventStream:
        """A stream of the run events that match every given filter (see :mod:`events`).

        ``async with factory.events(workflow_id=wf) as stream: async for event in
        stream: ...``. Without ``after`` the stream starts with what is committed after
        it is entered; ``after=event.id`` resumes exactly after that event. The caller
        (``user_id``/``access_token`` as for sessions, else the factory's) sees group
        events only as a member of the group, as with ``get_run``. The factory must be
        open.

        Raises (on entering or the first read):
            UnknownRunError, UnknownWorkflowGroupError, UnknownWorkflowError: an unknown
            filter value. UnauthorizedAccessError, UnauthenticatedAccessError: a run or
            group the caller may not see.
            EventsExpiredError: ``after`` is older than the events the store keeps.

        """
        self._check_open()
        assert self._hub is not None
        access = _EventAccess(self, user_id, access_token)
        flt = EventFilter(run_id=run_id, group_id=group_id, workflow_id=workflow_id)
        return self._hub.stream(flt, after, access)

    async def exec_workflow(
        self,
        run: Any,
        template: Any,
        arguments: dict[str, Any],
        staticfs: Any,
        config: dict[str, Any] | None = None,
    ) -> tuple[str, Any]:
        """Hand a prepared run to the engine (flowserv's signature; see :meth:`start`).

        Only ``run`` is used: a :class:`~flowserv_async.engine.job.RunJob` carries the
        template, arguments and configuration already applied. Returns the run's state
        and the file store. The factory must be open: a run needs its lifespan.

        Raises:
            TypeError: ``run`` is not a RunJob.
            FlowservError: the factory is not open.

        """
        if not isinstance(run, RunJob):
            raise TypeError(f"exec_workflow takes a RunJob, not {run!r}")
        self._check_open()
        await self.engine.start(run)
        return str(RunState.PENDING), self.volume


class _Slot:
    """A session's place in ``DB.admission`` (none for ``_Slot(None)``); released once."""

    __slots__ = ("_admission",)

    def __init__(self, admission: anyio.Semaphore | None) -> None:
        self._admission = admission

    @property
    def held(self) -> bool:
        """True until released."""
        return self._admission is not None

    def release(self) -> None:
        """Give the place back (again: nothing)."""
        if self._admission is not None:
            self._admission.release()
            self._admission = None


# The slot held by the session that the current task is in: a session opened inside it
# (in the same task or a task it started) does not wait for a second slot, which would
# wait forever once every slot is held by such an enclosing session.
_HELD_SLOT: ContextVar[_Slot | None] = ContextVar("flowserv_admission_slot", default=None)


class SessionManager:
    """One database session for one ``async with`` block.

    The transaction commits when the block exits normally and rolls back when it raises
    or is cancelled; the session is closed in every case. The session first waits for
    a slot of the database's admission (``DB.admission``), unless an enclosing session
    of the same task already holds one. Its ``AsyncSession`` is created when a service
    first needs it; reads before that run on a connection of their own (see
    :meth:`~flowserv_async.services.base.ServiceContext.read`).
    """

    def __init__(
        self, factory: LocalAPIFactory, user_id: str | None, access_token: str | None
    ) -> None:
        self._factory = factory
        self._user_id = user_id
        self._access_token = access_token
        self._ctx: ServiceContext | None = None
        self._slot = _Slot(None)
        self._slot_token: Token[_Slot | None] | None = None

    async def __aenter__(self) -> API:
        if self._ctx is not None:
            raise FlowservError("a session manager can be entered only once")
        factory = self._factory
        await factory._session_started()
        try:
            await self._admit(factory.db.admission)
        except BaseException:
            self._leave()
            await factory._session_ended()
            raise
        user_id = self._user_id or factory.user_id
        # An explicit token, even an empty one, replaces the factory's: the HTTP server
        # passes every request's (possibly missing) token this way.
        given = self._access_token
        token = None if user_id else (given if given is not None else factory.settings.access_token)
        # The AsyncSession is created by the first service that needs one (see
        # ServiceContext.read): a call that only reads runs without it.
        ctx = ServiceContext(
            settings=factory.settings,
            factory=factory,
            user_id=user_id,
            token_given=token is not None,
            leave_admission=self._slot.release,
        )
        username = None
        try:
            with translate_errors():
                if user_id is None and token is not None:
                    user = await ctx.read(authenticate, token)
                    if user is not None:
                        ctx.user_id, username = user.user_id, user.name
                if ctx.user_id is None and factory.settings.open_access:
                    ctx.user_id = DEFAULT_USER
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._leave()
                await factory._session_ended()
            raise
        self._ctx = ctx
        return API(ctx, username=username)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._ctx is not None
        session = self._ctx.opened_session
        committed = False
        try:
            if exc_type is None:
                if session is not None:
                    with translate_errors():
                        await session.run_sync(_commit_and_close)
                committed = True
        finally:
            if committed:
                self._leave()
            else:
                with anyio.CancelScope(shield=True):
                    if session is not None:
                        await session.rollback()
                    await self._run_hooks(self._ctx.on_rollback)
                    if session is not None:
                        await session.close()
                    self._leave()
                    await self._factory._session_ended()
        if not committed:
            return
        try:
            await self._run_hooks(self._ctx.after_commit)
        finally:
            with anyio.CancelScope(shield=True):
                await self._factory._session_ended()

    async def _admit(self, admission: anyio.Semaphore) -> None:
        enclosing = _HELD_SLOT.get()
        if enclosing is not None and enclosing.held:
            return
        await admission.acquire()
        self._slot = _Slot(admission)
        self._slot_token = _HELD_SLOT.set(self._slot)

    def _leave(self) -> None:
        self._slot.release()
        if self._slot_token is not None:
            _HELD_SLOT.reset(self._slot_token)
            self._slot_token = None

    @staticmethod
    async def _run_hooks(hooks: list[Callable[[], Awaitable[None]]]) -> None:
        for callback in hooks:
            try:
                await callback()
            except Exception:
                # The transaction is already decided: a failing clean-up (a file that
                # cannot be removed) must not change the caller's outcome. It is logged
                # for the operator.
                logger.exception("clean-up after the transaction failed")


def _commit_and_close(session: Session) -> None:
    """Commit the session's transaction, if it has begun one, and close the session.

    One call into SQLAlchemy's greenlet instead of two, and none of the commit's work
    for a session that ran no statement. After the commit the session holds no
    connection, so closing it does no I/O and cannot be interrupted. A commit that
    raises leaves the session open for the caller's rollback.
    """
    if session.in_transaction() or has_pending(session):
        session.commit()
    session.close()


class _EventAccess:
    """What one consumer of :meth:`LocalAPIFactory.events` may see: as ``get_run``."""

    def __init__(
        self, factory: LocalAPIFactory, user_id: str | None, access_token: str | None
    ) -> None:
        self._factory = factory
        self._user_id = user_id
        self._access_token = access_token
        self._caller: str | None = None
        # Membership per group: (member, hub's members_version, loop time looked up).
        self._members: dict[str, tuple[bool, int, float]] = {}

    async def check(self, flt: EventFilter) -> None:
        async with self._factory(self._user_id, self._access_token) as api:
            self._caller = api.user_id
            if flt.run_id is not None:
                await api.runs().get_run(flt.run_id)
            if flt.group_id is not None:
                # The group's runs are what the stream shows: members only.
                await api.runs().list_runs(flt.group_id, limit=0)
            if flt.workflow_id is not None:
                await api.workflows().get_workflow(flt.workflow_id)

    async def allows(self, event: Event) -> bool:
        group_id = event.group_id
        if group_id is None or self._factory.settings.open_access:
            return True
        if self._caller is None:
            return False
        hub = self._factory._hub
        version = hub.members_version if hub is not None else -1  # -1: closing, look up
        now = anyio.current_time()
        known = self._members.get(group_id)
        if known is not None and known[1] == version and now - known[2] < MEMBERSHIP_RECHECK:
            return known[0]
        async with self._factory.db.session() as session:
            member = await session.get(GroupMember, (group_id, self._caller)) is not None
        self._members[group_id] = (member, version, now)
        return member
