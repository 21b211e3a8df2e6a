"""The API documentation runs: every ```sh and ```python example of docs/api.md, and the README's curl
examples, against real function processes, each answer compared with the one written under it; and every
route of every function's OpenAPI document is reached by a curl and a Python example, so the documents
and the docs cannot drift from what the functions do.

How an example is written: a fenced block, in which the comment lines that follow some code (at the start
of the line) are what that code prints, and code followed by no comment prints nothing. An answer that
parses as JSON or as a Python literal, optionally after an HTTP status (`200 {...}`), is compared
structurally (every key, every item), `…` standing for any value, or inside a string for any text; any
other answer is text, compared whole, with `…` matching any text (an answer ending in `…` is a prefix).
Examples run in the order of the files (README first), one process per block: a block's shell variables
are its own, and what one block does (a submission, a decision) the next blocks see, as on `make up`.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from functions.lib.catalog import CANONICAL_PREFIX
from functions.lib.config import DEFAULT_PORTS
from functions.lib.openapi import document
from tests.conftest import FunctionProcess, function_env
from tests.support import ROOT, publish_model
from workflows.local.processes import FUNCTION_TARGETS, free_port

pytestmark = pytest.mark.integration

README, API = ROOT / "README.md", ROOT / "docs" / "api.md"
FENCE = re.compile(r"^```(\w*)\s*$")
LANGUAGES = ("sh", "python")
WILDCARD = "…"
# Each step's output ends with this line (a Python block also prints it between steps).
MARK = f"--- end of step {uuid.uuid4().hex} ---"
TOKEN = "docs-admin-token"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
DOCUMENTED_PORT = re.compile(
    r"127\.0\.0\.1:({})\b".format("|".join(str(DEFAULT_PORTS[part]) for part in FUNCTION_TARGETS))
)
CANONICAL_URL = re.compile(re.escape(CANONICAL_PREFIX) + r"(\w+)/\d+\.jpg")


# ---------------------------------------------------------------- reading the examples


@dataclass(frozen=True)
class Step:
    code: str
    answer: str  # what the code prints; "" for nothing
    line: int  # of the code's first line in its file


@dataclass(frozen=True)
class Example:
    where: str  # file:line of the opening fence
    language: str
    steps: tuple[Step, ...]

    def script(self, ports: dict[str, int]) -> str:
        """The block as one program with the documented ports replaced by the test's, which prints
        MARK after each step."""
        mark = f"printf '\\n%s\\n' '{MARK}'" if self.language == "sh" else f"print('\\n{MARK}', flush=True)"
        body = "\n".join(f"{step.code}\n{mark}" for step in self.steps)
        body = DOCUMENTED_PORT.sub(lambda port: f"127.0.0.1:{ports[port[1]]}", body)
        return f"set -euo pipefail\n{body}\n" if self.language == "sh" else f"{body}\n"


def steps(lines: list[str], first: int, where: str) -> tuple[Step, ...]:
    """The block's code runs, each with the comment lines that follow it as its answer."""
    found: list[Step] = []
    code: list[str] = []
    answer: list[str] = []
    start = first
    for number, line in enumerate(lines, first):
        if line.startswith("#"):
            if not code:
                raise ValueError(f"{where}: line {number} is an answer with no code before it")
            answer.append(line[2:] if line.startswith("# ") else line[1:])
            continue
        if answer:
            found.append(Step("\n".join(code).strip(), "\n".join(answer), start))
            code, answer = [], []
        if not code and line.strip():
            start = number
        if code or line.strip():
            code.append(line)
    if code:
        found.append(Step("\n".join(code).strip(), "\n".join(answer), start))
    return tuple(found)


def examples(path: Path, curl_only: bool = False) -> list[Example]:
    """The ```sh and ```python blocks of a Markdown file; with `curl_only`, the sh blocks that call a
    function (the README's other blocks are commands like `make up`)."""
    found: list[Example] = []
    block: list[str] = []
    language, opened = "", 0  # opened: the line of the block's opening fence; 0 outside a block
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence is None:
            block.append(line)  # outside a block too: the next opening fence empties it
        elif not opened:
            language, block, opened = fence[1], [], number
        else:
            where = f"{path.relative_to(ROOT)}:{opened}"
            calls = DOCUMENTED_PORT.search("\n".join(block)) is not None
            if language in LANGUAGES and (calls or not curl_only):
                found.append(Example(where, language, steps(block, opened + 1, where)))
            opened = 0
    return found


EXAMPLES = examples(README, curl_only=True) + examples(API)


# ---------------------------------------------------------------- comparing answers


def quote_wildcards(text: str) -> str:
    """`…` outside string literals as the string "…", so that the answer parses as JSON or Python."""
    out: list[str] = []
    quote: str | None = None
    escaped = False
    for char in text:
        if quote is not None:
            escaped, quote = (
                (not escaped and char == "\\"),
                (None if char == quote and not escaped else quote),
            )
        elif char in "\"'":
            quote = char
        elif char == WILDCARD:
            char = f'"{WILDCARD}"'
        out.append(char)
    return "".join(out)


def parse(text: str) -> tuple[str, int | None, Any] | None:
    """(json or python, the status printed before the value if any, the value), or None for text."""
    status, body = None, text
    if printed := re.fullmatch(r"(\d{3}) (.+)", text, re.DOTALL):
        status, body = int(printed[1]), printed[2]
    try:
        return "json", status, json.loads(body)
    except ValueError:
        pass
    try:
        return "python", status, ast.literal_eval(body.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in pattern.split(WILDCARD)), re.DOTALL)


def matches(expected: Any, actual: Any) -> bool:
    """Structurally: the same keys and items, the same types (a bool is not an int), `…` any value."""
    if expected == WILDCARD:
        return True
    if isinstance(expected, str) and WILDCARD in expected:
        return isinstance(actual, str) and glob(expected).fullmatch(actual) is not None
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list | tuple):
        return (
            type(actual) is type(expected)
            and len(actual) == len(expected)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(actual) is type(expected) and actual == expected


def answers(documented: str, printed: str) -> bool:
    """Whether what a step printed is the answer documented under it."""
    printed = printed.rstrip("\n")
    expected = parse(quote_wildcards(documented))
    if expected is None:
        return glob(documented).fullmatch(printed) is not None
    actual = parse(printed)
    return actual is not None and actual[:2] == expected[:2] and matches(expected[2], actual[2])


# ---------------------------------------------------------------- running them


@dataclass
class Functions:
    """The three functions on one catalog and one store, as `make up` runs them."""

    processes: dict[str, FunctionProcess]
    logs: dict[str, Path]
    # (part, method, path template) -> the languages of the examples that reached it
    covered: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    # example -> what each of its steps printed, or why it did not run to its end
    printed: dict[str, list[str] | str] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        return {str(DEFAULT_PORTS[part]): process.port for part, process in self.processes.items()}

    def log_sizes(self) -> dict[str, int]:
        return {part: log.stat().st_size for part, log in self.logs.items()}

    def record_requests(self, since: dict[str, int], language: str) -> None:
        """Which documented routes the requests logged since `since` reached, by the example's language."""
        for part, log in self.logs.items():
            with log.open("rb") as lines:
                lines.seek(since[part])
                for line in lines:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # gunicorn's own lines
                    if isinstance(entry, dict) and entry.get("message") == "request":
                        for method, template in reached(part, entry["method"], entry["path"]):
                            self.covered[(part, method, template)].add(language)

    def run(self, example: Example) -> None:
        since = self.log_sizes()
        command = ["bash", "-c"] if example.language == "sh" else [sys.executable, "-c"]
        try:
            done = subprocess.run(
                [*command, example.script(self.ports)],
                cwd=ROOT,
                env=dict(os.environ, TOKEN=TOKEN),
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            self.printed[example.where] = "did not finish in 120 s"
            return
        outputs = done.stdout.split(f"\n{MARK}\n")
        if done.returncode != 0 or len(outputs) != len(example.steps) + 1:
            self.printed[example.where] = (
                f"exit {done.returncode} after {len(outputs) - 1} of {len(example.steps)} steps\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        else:
            self.printed[example.where] = outputs[:-1]
        self.record_requests(since, example.language)


@functools.cache
def routes(part: str) -> list[tuple[str, str]]:
    """(method, path template) of every operation in the function's OpenAPI document."""
    paths = document(FUNCTION_TARGETS[part])["paths"]
    return [
        (method.upper(), path) for path, item in paths.items() for method in item if method in HTTP_METHODS
    ]


def reached(part: str, method: str, path: str) -> list[tuple[str, str]]:
    """The documented operations a request matches (a trailing slash is accepted, as the functions do)."""
    path = path.rstrip("/") or "/"
    return [
        (documented, template)
        for documented, template in routes(part)
        if documented == method and re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), path)
    ]


@pytest.fixture(scope="module")
def functions(
    tmp_path_factory: pytest.TempPathFactory, source: str, pretrained_tiny_model: tuple[bytes, dict]
) -> Iterator[Functions]:
    """The three functions in the state a fresh `make up` leaves: model 1 the champion (the small head on
    the pretrained backbone, which tells the documented photos apart as the real champion does), the
    canonical URLs the examples name already ingested (`make up` ingests all 400), no submission; then
    every example, in order."""
    home = tmp_path_factory.mktemp("api-docs")
    db_url, store_url = f"sqlite:///{home / 'catalog.db'}", (home / "objects").as_uri()
    publish_model(store_url, "1", pretrained_tiny_model)
    env = function_env(db_url, store_url, source) | {
        "DANDELION_HOME": str(home),
        "DANDELION_ADMIN_TOKEN": TOKEN,
        "DANDELION_RETRAIN_WEBHOOK": f"http://127.0.0.1:{free_port()}/retrain",  # nobody: no retraining
    }
    logs = {part: home / f"{part}.log" for part in FUNCTION_TARGETS}
    with ThreadPoolExecutor(len(FUNCTION_TARGETS)) as pool:
        starting = {
            part: pool.submit(FunctionProcess, part, env, log=logs[part]) for part in FUNCTION_TARGETS
        }
    running = Functions({part: f.result() for part, f in starting.items() if f.exception() is None}, logs)
    try:
        for future in starting.values():
            future.result()  # one that did not start fails the tests, the others stopped below
        named = {
            match[0]: match[1] for e in EXAMPLES for s in e.steps for match in CANONICAL_URL.finditer(s.code)
        }
        for url, label in sorted(named.items()):
            ingested = requests.post(
                f"{running.processes['ingest-one-url'].url}/", json={"url": url, "label": label}, timeout=60
            )
            assert ingested.status_code == 201, ingested.text
        for example in EXAMPLES:
            running.run(example)
        yield running
    finally:
        for process in running.processes.values():
            process.stop()


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.where)
def test_each_example_prints_its_documented_answer(functions: Functions, example: Example) -> None:
    printed = functions.printed[example.where]
    assert not isinstance(printed, str), printed
    wrong = [
        f"line {step.line}: {step.code}\n  documented: {step.answer!r}\n  printed:    {output.rstrip()!r}"
        for step, output in zip(example.steps, printed, strict=True)
        if not answers(step.answer, output)
    ]
    assert not wrong, "\n".join(wrong)


def test_examples_reach_only_the_functions_on_their_default_ports() -> None:
    """Only these ports are rewritten to the test's processes: any other would reach whatever listens
    there on this machine (another `make up`)."""
    hosts = re.compile(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]):\d+")
    elsewhere = [
        f"{example.where}: {address}"
        for example in EXAMPLES
        for step in example.steps
        for address in hosts.findall(step.code)
        if not DOCUMENTED_PORT.fullmatch(address)
    ]
    assert not elsewhere, elsewhere


def test_every_route_has_a_curl_and_a_python_example(functions: Functions) -> None:
    """A route added to an OpenAPI document without examples in the docs fails here."""
    missing = [
        f"{part} {method} {path}: no {language} example"
        for part in FUNCTION_TARGETS
        for method, path in routes(part)
        for language in LANGUAGES
        if language not in functions.covered[(part, method, path)]
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("documented", "printed", "same"),
    [
        ('{"a": 1, "b": …}', '{"b": [1, 2], "a": 1}', True),
        ('{"a": 1, "b": …}', '{"a": 2, "b": 3}', False),  # a wrong value
        ('{"a": 1}', '{"a": 1, "b": 2}', False),  # an undocumented key
        ('{"a": 1, "b": …}', '{"a": 1}', False),  # a documented key missing
        ('{"a": 1}', '{"a": 1.0}', False),  # another type
        ('{"a": true}', '{"a": 1}', False),
        ('{"url": "file:///…/raw/grass/….jpg"}', '{"url": "file:///tmp/x/raw/grass/ab.jpg"}', True),
        ('{"url": "file:///…/raw/grass/….jpg"}', '{"url": "file:///tmp/x/raw/dandelion/ab.jpg"}', False),
        ("[…, …]", "[1, 2, 3]", False),  # a list's length is exact
        ("202 {'id': …, 'new': True}", "202 {'id': 7, 'new': True}", True),
        ("202 {'id': …, 'new': True}", "200 {'id': 7, 'new': True}", False),  # another status
        ("{'new': True}", '{"new": true}', False),  # JSON documented as a Python value
        ('x{y="1"} …', 'x{y="1"} 3.0', True),
        ('x{y="1"} …', 'x{y="2"} 3.0', False),
        ("a\n…", "a\nb\nc", True),  # a prefix
        ("a", "a\nb", False),  # text is compared whole
        ("", "something", False),  # code followed by no answer must print nothing
    ],
)
def test_an_answer_matches_only_what_it_documents(documented: str, printed: str, same: bool) -> None:
    assert answers(documented, printed) is same


def test_steps_split_a_block_at_its_answers() -> None:
    block = ["x = 1", "print(x)", "# 1", "#  and more", "", "y = 2", "print(y)", "# 2", "z = 3"]
    assert steps(block, 10, "f:9") == (
        Step("x = 1\nprint(x)", "1\n and more", 10),
        Step("y = 2\nprint(y)", "2", 15),
        Step("z = 3", "", 18),
    )
