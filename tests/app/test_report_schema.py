"""Real compile reports of every target validate against the published report schema (docs/report.schema.json),
with and without labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from pimc.cli.main import main
from pimc.models import bundled_model_path

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "report.schema.json").read_text())


def test_the_schema_is_valid():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("target", ["escalate", "cim", "cmp-pim", "onnxruntime"])
@pytest.mark.parametrize("data", [[], ["--data", "digits"]], ids=["no-data", "digits"])
def test_a_real_report_validates(target: str, data: list[str], tmp_path: Path):
    report = tmp_path / "r.json"
    code = main(["compile", str(bundled_model_path()), "--target", target, "-o", str(tmp_path / "o.onnx"),
                 "--report", str(report), "--json", *data])
    assert code == 0
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(json.loads(report.read_text()))]
    assert not errors
