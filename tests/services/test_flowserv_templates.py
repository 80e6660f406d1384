"""Templates written the way flowserv 0.9.4 (and the ROB demos) write them run unmodified.

Each test is the regression test of one defect of issue 10, on a small template of its
own, installed from a folder and run through the service API (SQLite, blocking engine).
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from runs_helpers import blocking_factory

from flowserv_async import LocalAPIFactory
from flowserv_async.errors import InvalidArgumentError
from flowserv_async.template import WorkflowTemplate

# Every template ships these two scripts: write.py FILE WORDS..., copy.py SOURCE TARGET.
SCRIPTS = {
    "write.py": "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))\n",
    "copy.py": "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])\n",
}


@pytest.fixture
async def factory(tmp_path: Path) -> AsyncIterator[LocalAPIFactory]:
    """A factory whose ``start_run`` returns when the run has ended."""
    async with blocking_factory(tmp_path) as opened:
        yield opened


async def install(
    factory: LocalAPIFactory, folder: Path, spec: str, files: dict[str, str] | None = None
) -> tuple[str, str]:
    """Write ``benchmark.yaml`` and ``files`` into ``folder``, install it, make a group."""
    for name, text in {"benchmark.yaml": textwrap.dedent(spec), **SCRIPTS, **(files or {})}.items():
        path = anyio.Path(folder, name)
        await path.parent.mkdir(parents=True, exist_ok=True)
        await path.write_text(text)
    async with factory() as api:
        wf = await api.workflows().create_workflow(
            source=str(folder), name=folder.name, specfile="benchmark.yaml"
        )
        group = await api.groups().create_group(wf["id"], "team")
    return wf["id"], group["id"]


async def run(
    factory: LocalAPIFactory, group_id: str, arguments: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    async with factory() as api:
        return await api.runs().start_run(group_id, arguments or [])


async def upload(factory: LocalAPIFactory, group_id: str, content: bytes) -> str:
    async with factory() as api:
        doc = await api.uploads().upload_file(group_id, content, "input.txt")
    return str(doc["id"])


def file_arg(name: str, file_id: str, target: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"fileId": file_id}
    if target is not None:
        value["targetPath"] = target
    return {"name": name, "value": {"type": "$file", "value": value}}


async def result(factory: LocalAPIFactory, handle: dict[str, Any], name: str) -> str:
    """The text of the result file that the run handle lists as ``name``."""
    assert handle["state"] == "SUCCESS", handle.get("messages")
    (file_id,) = [f["id"] for f in handle["files"] if f["name"] == name]
    async with factory() as api:
        download = await api.runs().get_result_file(handle["id"], file_id)
        return (await download.read()).decode()


async def test_file_reference_in_files_inputs_is_the_target_path(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    _, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            files:
                inputs: ['$[[names]]']
                outputs: [out.txt]
            parameters:
                names: $[[names]]
            steps:
                - name: copy
                  files: {inputs: ['$[[names]]'], outputs: [out.txt]}
                  action:
                      environment: python
                      commands: ['${python} copy.py ${names} out.txt']
        parameters:
            - {name: names, dtype: file, target: data/names.txt}
        """,
    )
    handle = await run(factory, group, [file_arg("names", await upload(factory, group, b"Ann"))])
    assert await result(factory, handle, "out.txt") == "Ann"


async def test_legacy_input_files_reference_is_the_target_path(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    _, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            version: 0.3.0
            inputs:
                files: ['$[[names]]']
                parameters: {names: '$[[names]]'}
            workflow:
                type: serial
                specification:
                    steps:
                        - environment: python
                          commands: ['${python} copy.py ${names} out.txt']
            outputs:
                files: [out.txt]
        parameters:
            - {id: names, name: Names, datatype: file, as: data/names.txt}
        """,
    )
    handle = await run(factory, group, [file_arg("names", await upload(factory, group, b"Bo"))])
    assert await result(factory, handle, "out.txt") == "Bo"


async def test_template_parameter_rundir_wins_over_the_run_folder(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    # The ROB post-processing form: `rundir` is the folder of the ranked runs.
    _, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            files: {outputs: [out.txt]}
            parameters: {rundir: runs/}
            steps:
                - name: write
                  action:
                      environment: python
                      commands: ['${python} write.py out.txt ${rundir}']
        """,
    )
    assert await result(factory, await run(factory, group), "out.txt") == "runs/"


async def test_parent_folders_of_declared_outputs_exist_before_the_step(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    _, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            files: {outputs: [results/a/x.txt, logs/]}
            steps:
                - name: first
                  files: {outputs: [results/a/x.txt, tmp/]}
                  action:
                      environment: python
                      commands:
                          - '${python} write.py results/a/x.txt one'
                          - '${python} write.py tmp/y.txt two'
                - name: second
                  action:
                      environment: python
                      commands: ['${python} write.py logs/z.txt three']
        """,
    )
    handle = await run(factory, group)
    assert await result(factory, handle, "results/a/x.txt") == "one"


async def test_output_widget_may_be_a_name_and_files_are_named_by_their_key(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf_id, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            files: {outputs: [results/a.txt, results/b.txt]}
            steps:
                - name: write
                  action:
                      environment: python
                      commands:
                          - '${python} write.py results/a.txt A'
                          - '${python} write.py results/b.txt B'
        outputs:
            - {source: results/a.txt, key: first, widget: TextView}
            - {source: results/b.txt, title: B}
        """,
    )
    async with factory() as api:
        wf = await api.workflows().get_workflow(wf_id)
    assert wf["outputs"][0] == {"source": "results/a.txt", "key": "first", "widget": "TextView"}
    handle = await run(factory, group)
    by_name = {f["name"]: f for f in handle["files"]}
    assert set(by_name) == {"first", "results/b.txt"}
    assert by_name["first"]["widget"] == "TextView"
    assert await result(factory, handle, "first") == "A"


ACTOR_TEMPLATE = """
    workflow:
        files: {outputs: [out.txt]}
        steps:
            - name: model
              action: $[[model]]
    parameters:
        - name: model
          dtype: actor
          defaultValue:
              - container
              - environment: python
                commands: ['${python} write.py out.txt default']
    """


async def test_actor_default_in_rob_list_form_installs_and_runs(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    _, group = await install(factory, tmp_path / "wf", ACTOR_TEMPLATE)
    assert await result(factory, await run(factory, group), "out.txt") == "default"


def test_actor_default_is_not_checked_at_install() -> None:
    doc = yaml.safe_load("""
        workflow: {steps: [{name: s, action: '$[[a]]'}]}
        parameters: [{name: a, dtype: actor, defaultValue: not a step}]
    """)
    template = WorkflowTemplate.from_dict(doc)
    assert template.parameters["a"].to_dict()["defaultValue"] == "not a step"


async def test_legacy_step_that_is_an_actor_reference_runs_the_argument(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    _, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            version: 0.3.0
            workflow:
                type: serial
                specification:
                    steps: ['$[[preproc]]']
            outputs: {files: [out.txt]}
        parameters:
            - {id: preproc, name: Pre-processing, datatype: actor}
        """,
    )
    step = {"environment": "python", "commands": ["${python} write.py out.txt given"]}
    handle = await run(factory, group, [{"name": "preproc", "value": step}])
    assert await result(factory, handle, "out.txt") == "given"


async def test_int_parameter_accepts_infinite_defaults(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    _, group = await install(
        factory,
        tmp_path / "wf",
        """
        workflow:
            files: {outputs: [out.txt]}
            parameters: {low: '$[[low]]', high: '$[[high]]'}
            steps:
                - name: write
                  action:
                      environment: python
                      commands: ['${python} write.py out.txt ${low} ${high}']
        parameters:
            - {name: low, dtype: int, defaultValue: '-inf'}
            - {name: high, dtype: int, defaultValue: 'inf'}
        """,
    )
    assert await result(factory, await run(factory, group), "out.txt") == "-inf inf"


async def test_file_parameter_without_target_shows_target_null(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf_id, _ = await install(
        factory,
        tmp_path / "wf",
        """
        workflow: {steps: [{name: s, action: {environment: e, commands: ['true']}}]}
        parameters: [{name: data, dtype: file, defaultValue: data.csv}]
        """,
    )
    async with factory() as api:
        (para,) = (await api.workflows().get_workflow(wf_id))["parameters"]
    assert para["target"] is None
    assert para["defaultValue"] == "data.csv"


SCORED = """
    workflow:
        files: {outputs: [score.txt]}
        steps:
            - name: score
              action:
                  environment: python
                  commands: ['${python} code/score.py']
    parameters:
        - {name: data, dtype: file, target: data/input.txt}
    """
SCORE_FILES = {
    "code/score.py": "open('score.txt', 'w').write('1')\n",
    "data/input.txt": "the shipped default input\n",
}


@pytest.mark.parametrize("target", ["code/score.py", "code", "code/score.py/x"])
async def test_file_argument_may_not_replace_a_template_file(
    factory: LocalAPIFactory, tmp_path: Path, target: str
) -> None:
    _, group = await install(factory, tmp_path / "wf", SCORED, SCORE_FILES)
    file_id = await upload(factory, group, b"print('rank me first')")
    with pytest.raises(InvalidArgumentError, match=r"template file 'code/score\.py'"):
        await run(factory, group, [file_arg("data", file_id, target)])
    async with factory() as api:
        assert (await api.runs().list_runs(group))["runs"] == []
    runs_dir = anyio.Path(tmp_path, "api")
    assert [p async for p in runs_dir.rglob("score.py") if "static" not in p.parts] == []


async def test_file_argument_may_replace_the_default_at_its_declared_target(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    # flowserv's hello world ships a default input at the parameter's target path.
    _, group = await install(factory, tmp_path / "wf", SCORED, SCORE_FILES)
    file_id = await upload(factory, group, b"mine")
    handle = await run(factory, group, [file_arg("data", file_id)])
    assert await result(factory, handle, "score.txt") == "1"
