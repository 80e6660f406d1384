"""The hello-world template shipped in ``flowserv_async.examples``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import flowserv_async.examples
from flowserv_async.template import (
    InputFile,
    load_document,
    load_template,
    parse_arguments,
    replace_references,
)

HELLOWORLD = Path(flowserv_async.examples.__file__).parent / "helloworld"


def test_manifest_names_the_template_files() -> None:
    manifest = load_document(HELLOWORLD / "flowserv.yaml")
    assert manifest["name"] == "Hello World"
    assert (HELLOWORLD / manifest["instructions"]).is_file()
    assert (HELLOWORLD / manifest["specfile"]).is_file()


def test_template_validates_with_parameters_in_index_order() -> None:
    template = load_template(HELLOWORLD / "benchmark.yaml", base_dir=HELLOWORLD)
    assert template.to_dict()["parameters"] == [
        {
            "name": "names",
            "dtype": "file",
            "index": 0,
            "isRequired": True,
            "label": "Names file",
            "help": "Text file with one name per line.",
            "target": "data/names.txt",
        },
        {
            "name": "sleeptime",
            "dtype": "float",
            "index": 1,
            "isRequired": False,
            "label": "Sleep time (s)",
            "help": "Seconds to wait before writing the greetings.",
            "defaultValue": 0.1,
            "range": "[0,10]",
        },
        {
            "name": "greeting",
            "dtype": "string",
            "index": 2,
            "isRequired": False,
            "label": "Greeting",
            "defaultValue": "Hello",
        },
    ]
    assert [step["name"] for step in template.workflow["steps"]] == ["say_hello", "analyze"]
    assert template.outputs is not None
    assert [output.key for output in template.outputs] == ["greetings", "analytics"]
    assert template.result_schema is not None
    assert template.postproc is not None
    assert template.postproc.files == ("results/greetings.txt",)


def test_scripts_produce_a_rankable_result(tmp_path: Path) -> None:
    template = load_template(HELLOWORLD / "benchmark.yaml")
    arguments = parse_arguments(
        template.parameters,
        [{"name": "names", "value": {"type": "$file", "value": {"fileId": "f1"}}}],
    )
    assert arguments["names"] == InputFile("f1", "data/names.txt")
    context = replace_references(template.workflow["parameters"], arguments, template.parameters)
    code = HELLOWORLD / "code"
    subprocess.run(
        [
            sys.executable,
            str(code / "helloworld.py"),
            "--inputfile",
            str(HELLOWORLD / str(context["inputfile"])),
            "--outputfile",
            str(tmp_path / context["outputfile"]),
            "--sleeptime",
            "0",
            "--greeting",
            context["greeting"],
        ],
        check=True,
    )
    result = tmp_path / "results" / "analytics.json"
    subprocess.run(
        [
            sys.executable,
            str(code / "analyze.py"),
            "--inputfile",
            str(tmp_path / context["outputfile"]),
            "--outputfile",
            str(result),
        ],
        check=True,
    )
    assert template.result_schema is not None
    row = template.result_schema.extract(json.loads(result.read_text(encoding="utf-8")))
    assert row == {"avg_count": 12.5, "max_len": 14, "max_line": "Hello, Claire!"}


def test_postproc_script_reads_the_runs_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for run_id, text in (("r1", "Hello, Alice!\n"), ("r2", "Hi, Bob!\n")):
        (runs / run_id / "results").mkdir(parents=True)
        (runs / run_id / "results" / "greetings.txt").write_text(text, encoding="utf-8")
    (runs / "runs.json").write_text(
        json.dumps(
            [
                {"id": "r2", "name": "team b", "files": ["results/greetings.txt"]},
                {"id": "r1", "name": "team a", "files": ["results/greetings.txt"]},
            ]
        ),
        encoding="utf-8",
    )
    output = tmp_path / "results" / "ngrams.csv"
    subprocess.run(
        [
            sys.executable,
            str(HELLOWORLD / "code" / "postproc.py"),
            "--runs",
            str(runs),
            "--outputfile",
            str(output),
        ],
        check=True,
    )
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "rank,run,group,ngram,count"
    assert lines[1].startswith("1,r2,team b,")
    assert len(lines) == 1 + 5 + 5
