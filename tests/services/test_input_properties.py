"""Random templates and arguments: only FlowservErrors, and nothing left behind.

Hypothesis draws template documents (JSON-like values shaped loosely like templates,
written as JSON or YAML, and raw text) and run arguments. Installing a template and
starting a run may fail, but only with a :class:`FlowservError`, and a failed call
leaves the database rows and the file store as they were.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from dbutil import backend_database, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.errors import FlowservError, InvalidArgumentError

PARAMETERS = [
    {"name": "i", "dtype": "int", "isRequired": False},
    {"name": "f", "dtype": "float", "isRequired": False},
    {"name": "s", "dtype": "string", "isRequired": False},
    {"name": "b", "dtype": "bool", "isRequired": False},
    {
        "name": "sel",
        "dtype": "select",
        "values": [{"name": "A", "value": "a"}],
        "isRequired": False,
    },
    {"name": "file", "dtype": "file", "target": "data/in.txt", "isRequired": False},
    {"name": "l", "dtype": "list", "para": {"name": "li", "dtype": "int"}, "isRequired": False},
    {
        "name": "r",
        "dtype": "record",
        "fields": [{"name": "x", "dtype": "int"}],
        "isRequired": False,
    },
]
# A workflow without steps: a run that starts ends at once, and runs nothing.
TEMPLATE = {"workflow": {"files": {"inputs": []}}, "parameters": PARAMETERS}
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["$[[i]]", "$[[file]]", "../x", "/etc/passwd", "int", "file", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["name", "dtype", "index", "isRequired", "label", "help", "defaultValue", "group", "values",
     "target", "para", "fields", "range", "source", "key", "title", "steps", "files", "inputs",
     "outputs", "commands", "image", "workflow", "parameters", "parameterGroups", "results",
     "postproc", "file", "schema", "orderBy"]
)  # fmt: skip
shaped = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)
parameter = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c"]) | st.text(max_size=3),
        "dtype": st.sampled_from(
            ["int", "float", "bool", "string", "select", "file", "list", "record", "actor", "x"]
        ),
    },
    optional={key: shaped for key in ["index", "isRequired", "label", "help", "defaultValue",
              "group", "values", "target", "para", "fields", "range"]},
)  # fmt: skip
step = st.fixed_dictionaries(
    {"name": st.text(max_size=3), "commands": st.lists(st.sampled_from(["echo $[[a]]", "$[[b]]"]))},
    optional={"image": shaped, "files": shaped, "inputs": shaped, "outputs": shaped},
)
workflow = st.fixed_dictionaries(
    {},
    optional={
        "steps": st.lists(step, max_size=3) | shaped,
        "files": st.fixed_dictionaries(
            {}, optional={"inputs": shaped, "outputs": st.lists(scalars, max_size=3) | shaped}
        ),
        "parameters": st.dictionaries(st.text(max_size=3), shaped, max_size=3),
    },
)
documents = st.one_of(
    st.fixed_dictionaries(
        {"workflow": workflow},
        optional={
            "parameters": st.lists(parameter | shaped, max_size=4),
            "parameterGroups": shaped,
            "outputs": shaped,
            "results": shaped,
            "postproc": shaped,
        },
    ),
    st.dictionaries(keys, shaped, max_size=5),
    values,
)
arguments = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from([p["name"] for p in PARAMETERS]) | st.text(max_size=4)},
        optional={
            "value": values
            | st.fixed_dictionaries(
                {"type": st.sampled_from(["$file", "$record", "$list", "x"])},
                optional={"value": values | st.fixed_dictionaries({"fileId": st.text(max_size=4)})},
            )
        },
    )
    | values,
    max_size=4,
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Service:
    factory: LocalAPIFactory
    database: DB
    basedir: Path
    group_id: str
    folder: Path


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    folder = tmp_path_factory.mktemp("properties")
    async with backend_database("sqlite", folder) as database:
        env = {"FLOWSERV_API_DIR": str(folder / "api"), "FLOWSERV_AUTH": "open"}
        async with LocalAPIFactory(env=env, db=database) as factory:
            source = anyio.Path(folder / "fixed")
            await source.mkdir()
            await (source / "spec.json").write_text(json.dumps(TEMPLATE))
            async with factory() as api:
                wf = await api.workflows().create_workflow(
                    str(source), name="fixed", specfile="spec.json"
                )
                group = await api.groups().create_group(wf["id"], "team")
            yield Service(factory, database, folder / "api", group["id"], folder)


class _RolledBack(Exception):
    """Raised to end a session that succeeded, so that it leaves nothing."""


async def install(service: Service, text: str, suffix: str) -> None:
    source = anyio.Path(service.folder / "random")
    await source.mkdir(exist_ok=True)
    for old in [p async for p in source.iterdir()]:
        await old.unlink()
    await (source / f"spec{suffix}").write_text(text)
    try:
        async with service.factory() as api:
            await api.workflows().create_workflow(
                str(source), name="random", specfile=f"spec{suffix}"
            )
            raise _RolledBack
    except _RolledBack:
        pass


@SETTINGS
@given(doc=documents, as_yaml=st.booleans())
async def test_random_template_documents_fail_only_with_flowserv_errors(
    service: Service, doc: Any, as_yaml: bool
) -> None:
    text = yaml.safe_dump(doc) if as_yaml else json.dumps(doc)
    before = await snapshot(service.database, service.basedir)
    with contextlib.suppress(FlowservError):
        await install(service, text, ".yaml" if as_yaml else ".json")
    assert await snapshot(service.database, service.basedir) == before


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from("&*!-:[]{}<>|'\"#%@`? \n\tax01$"), max_size=80))
async def test_random_yaml_text_fails_only_with_flowserv_errors(
    service: Service, text: str
) -> None:
    before = await snapshot(service.database, service.basedir)
    with contextlib.suppress(FlowservError):
        await install(service, text, ".yaml")
    assert await snapshot(service.database, service.basedir) == before


@SETTINGS
@given(args=arguments)
async def test_random_run_arguments_fail_only_with_flowserv_errors(
    service: Service, args: Any
) -> None:
    before = await snapshot(service.database, service.basedir)
    try:
        async with service.factory() as api:
            run = await api.runs().start_run(service.group_id, args)
    except FlowservError:
        assert await snapshot(service.database, service.basedir) == before
    else:
        await service.factory.wait_run(run["id"], timeout=30)


async def test_deeply_nested_arguments_fail_as_invalid_arguments(service: Service) -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    before = await snapshot(service.database, service.basedir)
    with pytest.raises(InvalidArgumentError, match="nested more than 64 levels"):
        async with service.factory() as api:
            await api.runs().start_run(service.group_id, [{"name": "l", "value": deep}])
    assert await snapshot(service.database, service.basedir) == before
