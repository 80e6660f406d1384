"""Webhooks: each matching event is POSTed as JSON to the targets of ``FLOWSERV_WEBHOOKS``.

The setting names a JSON or YAML file with a list of targets::

    - url: https://example.org/hook      # http or https
      events: [run.state, ranking.changed]   # event types, or ["*"]
      secret: s3cret                     # HMAC-SHA256 key of the signature
      workflow: 1a2b...                  # optional: only this workflow's events
      attempts: 6                        # optional: tries per event (default 6)
      backoff: 0.5                       # optional: first retry delay, seconds (max 60)

Each target follows the stream on its own (its own task and position), so events reach
a target in order and a slow or failing target delays neither the engine nor the other
targets. The body is the event's JSON (:meth:`Event.to_dict`); the headers
``X-Flowserv-Event`` (type), ``X-Flowserv-Delivery`` (event id) and
``X-Flowserv-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``. A
transport error, a 5xx or a 429 is retried with exponential backoff and full jitter
(tenacity) until the target's attempts are spent; then, and for any other status, the
event is logged as an error, counted as failed, and the target goes on with the next
event. Needs the ``webhooks`` extra (httpx, tenacity).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import yaml

from flowserv_async.config import FLOWSERV_WEBHOOKS
from flowserv_async.errors import EventsExpiredError, FlowservError, InvalidConfigurationError
from flowserv_async.events.hub import EventHub, EventStream
from flowserv_async.events.model import Event, EventFilter, EventType

try:
    import httpx
    from tenacity import (
        AsyncRetrying,
        RetryError,
        retry_if_exception_type,
        stop_after_attempt,
        wait_random_exponential,
    )
except ImportError:  # the webhooks extra is optional: checked when webhooks are set up
    _HAVE_EXTRA = False
else:
    _HAVE_EXTRA = True

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Flowserv-Signature"
_MAX_BACKOFF = 60.0
_TIMEOUT = 10.0
_ALL = "*"


@dataclass(frozen=True)
class WebhookTarget:
    """One configured receiver."""

    url: str
    events: frozenset[str]
    secret: str
    workflow_id: str | None = None
    attempts: int = 6
    backoff: float = 0.5

    def wants(self, event: Event) -> bool:
        """True for the event types the target subscribed to."""
        return _ALL in self.events or str(event.type) in self.events


@dataclass
class WebhookStats:
    """Deliveries to one target so far."""

    url: str
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    last_error: str | None = field(default=None)


def sign(secret: str, body: bytes) -> str:
    """The signature header value of a body: ``sha256=<hex digest>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def parse_targets(doc: Any, source: str) -> list[WebhookTarget]:
    """Validate the webhook list read from ``source``.

    Raises:
        InvalidConfigurationError: naming the bad entry.

    """
    if not isinstance(doc, list):
        raise InvalidConfigurationError(f"{FLOWSERV_WEBHOOKS} {source}: expected a list")
    kinds = {str(k) for k in EventType} | {_ALL}
    targets = []
    for i, item in enumerate(doc):
        where = f"{FLOWSERV_WEBHOOKS} {source}, entry {i}"
        if not isinstance(item, dict):
            raise InvalidConfigurationError(f"{where}: expected a mapping, got {item!r}")
        unknown = set(item) - {"url", "events", "secret", "workflow", "attempts", "backoff"}
        if unknown:
            raise InvalidConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        url, events, secret = item.get("url"), item.get("events"), item.get("secret")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidConfigurationError(f"{where}: url must be an http(s) URL, got {url!r}")
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) and e in kinds for e in events)
        ):
            raise InvalidConfigurationError(
                f"{where}: events must be a list of {sorted(kinds)}, got {events!r}"
            )
        if not isinstance(secret, str) or not secret:
            raise InvalidConfigurationError(f"{where}: secret must be a non-empty string")
        workflow = item.get("workflow")
        if workflow is not None and not isinstance(workflow, str):
            raise InvalidConfigurationError(f"{where}: workflow must be a workflow id")
        attempts, backoff = item.get("attempts", 6), item.get("backoff", 0.5)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise InvalidConfigurationError(f"{where}: attempts must be a positive integer")
        if not isinstance(backoff, int | float) or isinstance(backoff, bool) or backoff <= 0:
            raise InvalidConfigurationError(f"{where}: backoff must be a positive number")
        targets.append(
            WebhookTarget(url, frozenset(events), secret, workflow, attempts, float(backoff))
        )
    return targets


async def load_targets(source: str) -> list[WebhookTarget]:
    """Read and validate the webhook file."""
    try:
        text = await anyio.Path(source).read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidConfigurationError(f"cannot read {FLOWSERV_WEBHOOKS} {source}: {exc}") from exc
    return parse_targets(doc, source)


class _Retryable(Exception):
    """A delivery that may succeed when tried again."""


class WebhookDispatcher:
    """Posts events to the targets; one task per target, all in one task group."""

    def __init__(self, hub: EventHub, targets: list[WebhookTarget]) -> None:
        self._hub = hub
        self.targets = targets
        self.stats = [WebhookStats(t.url) for t in targets]
        self._stop = anyio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        """Start following the stream (from now on).

        Raises:
            InvalidConfigurationError: the ``webhooks`` extra is not installed.

        """
        if not _HAVE_EXTRA:
            raise InvalidConfigurationError(
                f"{FLOWSERV_WEBHOOKS} needs the webhooks extra:"
                " pip install 'flowserv-async[webhooks]'"
            )
        self._client = httpx.AsyncClient(timeout=_TIMEOUT)
        ready = anyio.Event()
        # Like the engine's: the one task outside a task group; aclose() awaits it.
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(ready))
        await ready.wait()

    async def aclose(self) -> None:
        """Stop delivering (an event in delivery is abandoned) and close the client."""
        self._stop.set()
        with anyio.CancelScope(shield=True):
            if self._supervisor is not None:
                await self._supervisor
            if self._client is not None:
                await self._client.aclose()

    async def _supervise(self, ready: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            for target, stats in zip(self.targets, self.stats, strict=True):
                stream = self._hub.stream(EventFilter(workflow_id=target.workflow_id))
                await stream.start()
                tg.start_soon(self._follow, target, stats, stream)
            ready.set()
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def _follow(
        self, target: WebhookTarget, stats: WebhookStats, stream: EventStream
    ) -> None:
        while True:
            try:
                async with stream:
                    async for event in stream:
                        if target.wants(event):
                            await self._deliver(target, stats, event)
            except EventsExpiredError as exc:
                # The target fell behind by more than the store keeps: what is gone is
                # counted as one failure, and delivery goes on with what comes next.
                stats.failed += 1
                stats.last_error = exc.message
                logger.error("webhook %s: %s", target.url, exc.message)  # noqa: TRY400 - no traceback to show
                stream = self._hub.stream(EventFilter(workflow_id=target.workflow_id))
            except FlowservError:
                return  # the hub closed

    async def _deliver(self, target: WebhookTarget, stats: WebhookStats, event: Event) -> None:
        body = json.dumps(event.to_dict(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Flowserv-Event": str(event.type),
            "X-Flowserv-Delivery": str(event.id),
            SIGNATURE_HEADER: sign(target.secret, body),
        }

        def count_retry(state: Any) -> None:
            stats.retried += 1

        retrying = AsyncRetrying(
            stop=stop_after_attempt(target.attempts),
            wait=wait_random_exponential(multiplier=target.backoff, max=_MAX_BACKOFF),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=count_retry,
        )
        failure: BaseException | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(target.url, body, headers)
        except RetryError as exc:
            failure = exc.last_attempt.exception()
        except _Permanent as exc:
            failure = exc
        if failure is None:
            stats.delivered += 1
            return
        stats.failed += 1
        stats.last_error = str(failure)
        logger.error(
            "webhook %s: event %d (%s) not delivered: %s", target.url, event.id, event.type, failure
        )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        assert self._client is not None
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise _Permanent(f"HTTP {response.status_code}")


class _Permanent(Exception):
    """A delivery that trying again will not fix (a 4xx answer)."""
