"""Every listing refuses a bad limit or offset with a clear error, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from runs_helpers import install, step

from flowserv_async import LocalAPIFactory
from flowserv_async.errors import ConstraintViolationError, InvalidArgumentError


@pytest.mark.parametrize(("limit", "offset"), [(-1, None), (None, -5), ("3", None), (True, 0)])
async def test_listings_refuse_bad_paging(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, limit: Any, offset: Any
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    _, group_id = await install(factory, tmp_path / "w", [step("s", "true")])
    calls = [
        lambda api: api.users().list_users(limit=limit, offset=offset),
        lambda api: api.workflows().list_workflows(limit=limit, offset=offset),
        lambda api: api.groups().list_groups(limit=limit, offset=offset),
        lambda api: api.uploads().list_uploaded_files(group_id, limit=limit, offset=offset),
        lambda api: api.runs().list_runs(group_id, limit=limit, offset=offset),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=r"limit|offset"):
            async with factory() as api:
                await call(api)


async def test_members_must_be_a_list(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    wf_id, _ = await install(factory, tmp_path / "w", [step("s", "true")])
    with pytest.raises(ConstraintViolationError, match="members"):
        async with factory() as api:
            await api.groups().create_group(wf_id, "other", members="abc")  # type: ignore[arg-type]
