"""Step functions for the runner tests, run through Hera's runner in a process of their own, as a pod
runs them."""

import sys
from pathlib import Path
from typing import Annotated

from hera.workflows import Parameter


def numbers(count: int) -> Annotated[list[int], Parameter(name="numbers")]:
    return list(range(count))


def numbers_on_stdout(count: int) -> list[int]:
    """Hera's runner prints a return value, but prints nothing at all for an empty one."""
    return list(range(count))


def square(n: int, offset: int = 0) -> dict:
    return {"n": n, "square": n * n + offset}


def total(results: list[dict]) -> Annotated[int, Parameter(name="total")]:
    return sum(r["square"] for r in results)


def flaky(counter: str, failures: int) -> str:
    """Fails its first `failures` attempts; the attempts are counted in a file, as nothing else outlives
    a pod."""
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"ok after {attempt}"


def greet(name: str) -> str:
    return f"hello {name}"


def noisy() -> dict:
    """Returns its value on stdout, as Hera's runner does without annotations, after a library's print."""
    print("View run at http://mlflow/#/runs/1")
    return {"n": 1}


def clean() -> Annotated[dict, Parameter(name="value")]:
    """The same, with its value as a named output parameter: written to a file, whatever is printed."""
    print("View run at http://mlflow/#/runs/1")
    return {"n": 1}


def silent() -> None:
    """Declares an output (in the test manifest) that it never writes."""


def double(data: dict) -> int:
    return 2 * data["n"]


def chatty(count: int) -> Annotated[int, Parameter(name="count")]:
    """Reports its progress as a training step does."""
    from workflows.progress import report_progress

    for step in range(count):
        report_progress(f"step {step + 1} of {count}")
    print("not progress", file=sys.stderr)
    return count
