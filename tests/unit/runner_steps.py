"""Step functions for the runner tests, called through Hera's runner as a pod would call them."""

calls: dict[str, int] = {}


def numbers(count: int) -> list[int]:
    return list(range(count))


def square(n: int, offset: int = 0) -> dict:
    return {"n": n, "square": n * n + offset}


def total(results: list[dict]) -> int:
    return sum(r["square"] for r in results)


def flaky(key: str, failures: int) -> str:
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= failures:
        raise ConnectionError(f"attempt {calls[key]} failed")
    return f"ok after {calls[key]}"


def greet(name: str) -> str:
    return f"hello {name}"
