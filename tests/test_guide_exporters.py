"""The exporter guide's examples (docs/guide/exporters.md) run as written, on 64 training images (so they
cannot rot): the setup block trains the model, then each method's library call and CLI line."""

from __future__ import annotations

import functools
import os
import re
import shlex
from pathlib import Path

import onnx
import pytest

import pimc.models.train as train_module
from pimc.cli.main import main

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "exporters.md"
LIMIT = 64
METHODS = ("decompose", "pattern", "prune", "quantize", "comparator")


def _blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block between the exporter-examples markers."""
    text = GUIDE.read_text()
    section = text.split("<!-- exporter-examples -->", 1)[1].split("<!-- /exporter-examples -->", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def _run_cli(code: str) -> None:
    """Each ``pimc ...`` line, in-process, on LIMIT training images."""
    for line in code.strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "pimc", line
        status = main([*args[1:], "--train-limit", str(LIMIT)])
        assert status == 0, line


@pytest.fixture(scope="module")
def setup(tmp_path_factory, single_torch_thread):
    """Run the setup blocks (CLI model + torch model) in a scratch directory; yield the namespace."""
    blocks = _blocks()
    assert [lang for lang, _ in blocks[:2]] == ["bash", "python"]
    cwd = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("readme"))
    original = train_module.training_data
    train_module.training_data = functools.partial(original, limit=LIMIT)
    try:
        _run_cli(blocks[0][1])
        namespace: dict = {}
        exec(compile(blocks[1][1], "guide setup", "exec"), namespace)
        yield namespace
    finally:
        train_module.training_data = original
        os.chdir(cwd)


def test_readme_has_one_library_and_one_cli_example_per_method() -> None:
    blocks = _blocks()[2:]
    assert len(blocks) == 2 * len(METHODS)
    for index, method in enumerate(METHODS):
        (lang_py, code_py), (lang_sh, code_sh) = blocks[2 * index], blocks[2 * index + 1]
        assert lang_py == "python" and f'method="{method}"' in code_py
        assert lang_sh == "bash" and f"pimc export {method} --model my.onnx --data mnist" in code_sh


# prune's default schedule is 5 rounds × 20 epochs (twice: library and CLI): ~15 s even on 64 images
RUNS = [pytest.param(m, marks=pytest.mark.slow) if m == "prune" else m for m in METHODS]


@pytest.mark.parametrize("method", RUNS)
def test_readme_example_runs(method: str, setup) -> None:
    blocks = _blocks()[2:]
    index = METHODS.index(method)
    code_py, code_sh = blocks[2 * index][1], blocks[2 * index + 1][1]
    namespace = dict(setup)
    exec(compile(code_py, f"guide {method}", "exec"), namespace)
    _run_cli(code_sh)
    source = onnx.load("my.onnx")
    outputs = re.findall(r'output="([^"]+)"', code_py) + re.findall(r"-o (\S+)", code_sh)
    assert len(outputs) == 2
    for name in outputs:
        proto = onnx.load(name)
        assert [o.name for o in proto.graph.output] == [o.name for o in source.graph.output]
