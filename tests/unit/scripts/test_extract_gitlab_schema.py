"""scripts/ci/extract_gitlab_schema.py reads GitLab's CI schema out of a minified bundle as data:
unquoted and quoted keys, the minifier's !0/!1, escapes, nested arrays; nothing is run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts" / "ci"))
from extract_gitlab_schema import extract  # noqa: E402

BUNDLE = (
    'var a=1;function f(){return{x:1}}var Sn={$schema:"http://json-schema.org/draft-07/schema#",'
    '$id:"https://gitlab.com/.gitlab-ci.yml",type:"object",properties:{stages:{type:"array",'
    'uniqueItems:!0,minItems:1,default:["build","test"]}},additionalProperties:{$ref:'
    '"#/definitions/job"},definitions:{job:{"^[.]":{description:"Hidden \\"keys\\"\\u00e9\\n"},'
    "markdownDescription:'it`s',timeout:-1.5e2,deprecated:!1,nothing:null}}};console.log(Sn);"
)


def test_the_schema_literal_is_read_as_data() -> None:
    schema = extract(BUNDLE)
    assert schema["$id"] == "https://gitlab.com/.gitlab-ci.yml"
    assert schema["properties"]["stages"] == {
        "type": "array",
        "uniqueItems": True,
        "minItems": 1,
        "default": ["build", "test"],
    }
    job = schema["definitions"]["job"]
    assert job["^[.]"]["description"] == 'Hidden "keys"é\n'
    assert (job["markdownDescription"], job["timeout"], job["deprecated"], job["nothing"]) == (
        "it`s",
        -150.0,
        False,
        None,
    )


def test_a_bundle_without_the_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="no GitLab CI schema"):
        extract("var x={$id:'https://example.org/other'}")
    with pytest.raises(ValueError, match="not the CI schema"):
        extract('var y={$id:"https://gitlab.com/.gitlab-ci.yml",definitions:{}}')
