#!/usr/bin/env python3
"""Extracts GitLab's CI schema (app/assets/javascripts/editor/schema/ci.json in GitLab's
repository, the schema GitLab's own pipeline editor validates .gitlab-ci.yml with) from the
npm package gitlab-ci-local, which bundles it in dist/index.js as a JavaScript object literal.

    python3 scripts/ci/extract_gitlab_schema.py package/dist/index.js > ci.json

The literal is found by its `$id` ("https://gitlab.com/.gitlab-ci.yml") and read by a small
parser of JavaScript literals (objects, arrays, strings, numbers, true/false/null and the
minifier's !0/!1): data only, nothing of the bundle is run.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

SCHEMA_ID = '"https://gitlab.com/.gitlab-ci.yml"'
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class Parser:
    def __init__(self, text: str, position: int) -> None:
        self.text = text
        self.at = position

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at offset {self.at}: {self.text[self.at : self.at + 40]!r}")

    def skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t\r\n":
            self.at += 1

    def value(self) -> Any:
        self.skip()
        char = self.text[self.at]
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        if char in "\"'`":
            return self.string()
        for literal, result in (("!0", True), ("!1", False), ("true", True), ("false", False)):
            if self.text.startswith(literal, self.at):
                self.at += len(literal)
                return result
        if self.text.startswith("null", self.at):
            self.at += 4
            return None
        number = _NUMBER.match(self.text, self.at)
        if number:
            self.at = number.end()
            return json.loads(number.group())
        raise self.fail("unexpected value")

    def string(self) -> str:
        quote = self.text[self.at]
        self.at += 1
        out: list[str] = []
        while True:
            char = self.text[self.at]
            if char == quote:
                self.at += 1
                return "".join(out)
            if quote == "`" and self.text.startswith("${", self.at):
                raise self.fail("template substitution in a data literal")
            if char == "\\":
                following = self.text[self.at + 1]
                if following == "u":
                    if self.text[self.at + 2] == "{":
                        end = self.text.index("}", self.at)
                        out.append(chr(int(self.text[self.at + 3 : end], 16)))
                        self.at = end + 1
                    else:
                        out.append(chr(int(self.text[self.at + 2 : self.at + 6], 16)))
                        self.at += 6
                    continue
                if following == "x":
                    out.append(chr(int(self.text[self.at + 2 : self.at + 4], 16)))
                    self.at += 4
                    continue
                if following == "\n":
                    self.at += 2
                    continue
                out.append(_ESCAPES.get(following, following))
                self.at += 2
                continue
            out.append(char)
            self.at += 1

    def key(self) -> str:
        self.skip()
        if self.text[self.at] in "\"'":
            return self.string()
        match = _IDENT.match(self.text, self.at) or _NUMBER.match(self.text, self.at)
        if not match:
            raise self.fail("unexpected key")
        self.at = match.end()
        return match.group()

    def object(self) -> dict[str, Any]:
        self.at += 1
        result: dict[str, Any] = {}
        while True:
            self.skip()
            if self.text[self.at] == "}":
                self.at += 1
                return result
            name = self.key()
            self.skip()
            if self.text[self.at] != ":":
                raise self.fail("expected ':'")
            self.at += 1
            result[name] = self.value()
            self.skip()
            if self.text[self.at] == ",":
                self.at += 1

    def array(self) -> list[Any]:
        self.at += 1
        result: list[Any] = []
        while True:
            self.skip()
            if self.text[self.at] == "]":
                self.at += 1
                return result
            result.append(self.value())
            self.skip()
            if self.text[self.at] == ",":
                self.at += 1


def extract(bundle: str) -> dict[str, Any]:
    marker = bundle.find(f"$id:{SCHEMA_ID}")
    if marker < 0:
        marker = bundle.find(f'"$id":{SCHEMA_ID}')
    if marker < 0:
        raise ValueError(
            "no GitLab CI schema ($id https://gitlab.com/.gitlab-ci.yml) in the bundle"
        )
    start = bundle.rfind("{", 0, marker)
    schema = Parser(bundle, start).object()
    if "definitions" not in schema or "job" not in schema["definitions"]:
        raise ValueError("the literal found is not the CI schema (no definitions.job)")
    return schema


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as file:
        json.dump(extract(file.read()), sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
