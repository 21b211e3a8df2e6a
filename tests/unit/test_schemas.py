"""CI rebuilds ../shared/schemas from its public sources (`workflows.local.schemas`): the files it fetches
are the ones the machines have, and the kubeconform tree it derives from them is the one they have."""

import json

from tests.support import SHARED
from workflows.local.schemas import FROM_CRDS, ONLY_DERIVED, UPSTREAM, derived

SCHEMAS = SHARED / "schemas"
KUBECONFORM = SCHEMAS / "kubeconform"


def test_ci_fetches_every_upstream_copy_the_machines_have() -> None:
    copies = {
        str(path.relative_to(SCHEMAS))
        for path in SCHEMAS.rglob("*")
        if path.is_file() and path.name != "README.md" and KUBECONFORM not in path.parents
    } - {str(path.relative_to(SCHEMAS)) for path in SCHEMAS.glob("upstream-only/*")}  # CI's, for deriving
    assert set(UPSTREAM) == copies


def test_the_derived_tree_is_the_machines_own() -> None:
    tree = derived(SCHEMAS)
    kept = {str(path.relative_to(KUBECONFORM)) for path in KUBECONFORM.rglob("*.json")}
    # Two CRDs are not kept, only their derived schemas: CI fetches them; on the machines they are absent.
    absent = {path for path, (crd, _version) in FROM_CRDS.items() if not (SCHEMAS / crd).exists()}
    assert {FROM_CRDS[path][0] for path in absent} <= set(ONLY_DERIVED)
    assert set(tree) == kept - absent
    for path, schema in tree.items():
        assert schema == json.loads((KUBECONFORM / path).read_text()), path
