"""What a fresh machine installs is what CI tested: every import declared and pinned, the lock in step
with pyproject, no private APIs of other projects, and a hung test that fails alone."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.support import ROOT
from workflows.lib.training import cpu_computes_bfloat16

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements" / "dev.lock"
OWN = {"functions", "workflows", "web", "observability", "tests"}


def declared() -> dict[str, Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"].values()
    requirements = [Requirement(line) for line in project["dependencies"] + [r for e in extras for r in e]]
    return {
        importlib.metadata.distribution(r.name).name.lower(): r for r in requirements if r.name != "dandelion"
    }


def imported_modules(folder: str) -> set[str]:
    modules = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - OWN - {"__future__"}


def test_every_module_the_code_imports_is_declared_in_pyproject() -> None:
    distributions = importlib.metadata.packages_distributions()
    names = set(declared())
    for folder in ("functions", "workflows", "web", "observability", "tests"):
        for module in sorted(imported_modules(folder)):
            providers = {d.lower() for d in distributions.get(module, [])}
            assert providers & names, f"{folder}/ imports {module}, which no pyproject requirement installs"


def test_every_requirement_is_pinned_and_the_lock_agrees() -> None:
    locked = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, _, version = line.partition("==")
            locked[importlib.metadata.distribution(name).name.lower()] = version
    for name, requirement in declared().items():
        pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert len(pins) == 1, f"{requirement} is not pinned"
        assert locked.get(name) == pins[0], f"{LOCK.name} has {name} {locked.get(name)}, pyproject {pins[0]}"
    # A requirement resolved from this machine's disk would be written as `name @ file:...` or a bare path.
    local = re.compile(r"^\S+ @ file:|^[./]", re.MULTILINE)
    assert not local.search(LOCK.read_text()), "the lock names a path on this machine"


def test_the_installed_environment_is_the_lock() -> None:
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, _, version = line.partition("==")
            assert importlib.metadata.version(name) == version, f"{name} is not the locked {version}"


def test_no_private_function_of_torch_or_any_other_project_is_called() -> None:
    private = re.compile(r"\b(torch|onnxruntime|mlflow|hera|numpy|np|gradio|gr)(\.\w+)*\._[a-z]\w*")
    for folder in ("functions", "workflows", "web", "observability"):
        for path in (ROOT / folder).rglob("*.py"):
            found = private.search(path.read_text())
            assert found is None, f"{path.relative_to(ROOT)} uses {found.group(0)}"


def test_native_bfloat16_is_read_from_the_cpu_flags() -> None:
    assert cpu_computes_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_computes_bfloat16("flags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert not cpu_computes_bfloat16("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_computes_bfloat16("model name\t: avx512_bf16 in a name is not a flag\nflags\t\t: avx2\n")


def test_a_hung_test_fails_alone_on_its_timeout(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(
        "import time\n\ndef test_hangs():\n    time.sleep(60)\n\ndef test_passes():\n    pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=2", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stdout
    assert "Timeout" in run.stdout and "1 failed, 1 passed" in run.stdout
