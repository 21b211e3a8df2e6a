"""Least privilege in platform/, checked offline (no MinIO or cluster runs here): each workload's S3 policy
allows only the prefixes of the store layout the code uses and only the actions it performs there; each
workload reads its own Secret and nobody else's; the user names and variables the scripts and the
manifests pass between them agree with the Python that grants (functions/lib/privileges.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from functions.lib import layout, privileges
from tests.support import ROOT

PLATFORM = ROOT / "platform"
POLICIES = PLATFORM / "base" / "minio" / "policies"
OVERLAYS = ("dev", "prod")
SHA = "0" * 64


def top(key: str) -> str:
    """The layout's prefix a key lives under: `raw/grass/<sha>.jpg` -> `raw/`."""
    return key.split("/", 1)[0] + "/"


# The object store's layout, from the code's own key builders (functions.lib.layout).
RAW, INCOMING = top(layout.raw_key("grass", SHA)), top(layout.incoming_key(SHA, "png"))
DATASETS, FEATURES = top(layout.manifest_key("v1")), top(layout.feature_key("backbone", SHA))
MODELS, MLFLOW = top(layout.model_key("1")), top(f"{layout.MLFLOW_ARTIFACTS}/1")
assert {top(layout.metadata_key("1")), top(layout.CHAMPION_KEY)} == {MODELS}
GET, PUT, DELETE = "s3:GetObject", "s3:PutObject", "s3:DeleteObject"

# What each workload does in the store (a HEAD is a GetObject to S3), and why.
OBJECTS: dict[str, dict[str, set[str]]] = {
    # ingest.py: exists, put; delete of its own object when a concurrent attempt settled the row first.
    "ingest-one-url": {RAW: {GET, PUT, DELETE}},
    # submissions.py: a submission under incoming/; an accept or relabel copies an image into raw/.
    "validate-label": {INCOMING: {GET, PUT}, RAW: {GET, PUT}},
    # model_server.py: champion.json, the model and its metadata.
    "predict": {MODELS: {GET}},
    # The snapshot and training read raw/, write datasets/ and the feature cache; promotion writes models/.
    "train-model": {RAW: {GET}, DATASETS: {GET, PUT}, FEATURES: {GET, PUT}, MODELS: {PUT}},
    # MLflow's proxied artifacts, including its deletions and multipart uploads of large models.
    "mlflow": {MLFLOW: {GET, PUT, DELETE, "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}},
}
LISTED = {"train-model": {FEATURES}, "mlflow": {MLFLOW}}  # features.py lists the cache; MLflow its runs


def variable(workload: str) -> str:
    return workload.upper().replace("-", "_")


def secret(workload: str) -> str:
    return f"dandelion-{workload}-secrets"


def container(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    return document["spec"]["template"]["spec"]["containers"][0]


def secret_variables(path: Path) -> dict[str, dict[str, str]]:
    """The first container's variables that come from a Secret: name -> its secretKeyRef."""
    variables = container(path)["env"]
    return {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in variables
        if "secretKeyRef" in v.get("valueFrom", {})
    }


def found(pattern: str, text: str) -> str:
    """The first group of `pattern`'s match in `text` (multi-line), which must be there."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, pattern
    return match[1]


def bucket() -> str:
    config = (PLATFORM / "base" / "config" / "dandelion-config.env").read_text()
    return urlparse(found(r"^DANDELION_STORE_URL=(.+)$", config)).netloc


def policy(workload: str) -> dict[str, Any]:
    return json.loads((POLICIES / f"{workload}.json").read_text())


def test_every_prefix_a_policy_names_is_one_of_the_layout() -> None:
    objects = f"arn:aws:s3:::{bucket()}/"
    layout_prefixes = {RAW, INCOMING, DATASETS, FEATURES, MODELS, MLFLOW}
    for path in sorted(POLICIES.glob("*.json")):
        for statement in json.loads(path.read_text())["Statement"]:
            for resource in statement["Resource"]:
                if resource != f"arn:aws:s3:::{bucket()}":
                    assert resource.startswith(objects) and resource.endswith("/*"), (path.name, resource)
                    assert resource.removeprefix(objects).removesuffix("*") in layout_prefixes, resource


@pytest.mark.parametrize("workload", sorted(OBJECTS))
def test_each_workload_may_do_only_what_it_does_on_its_prefixes(workload: str) -> None:
    document = policy(workload)
    assert document["Version"] == "2012-10-17"
    allowed: dict[str, set[str]] = {}
    listed: set[str] = set()
    for statement in document["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
        assert statement["Effect"] == "Allow"
        assert all(re.fullmatch(r"s3:[A-Za-z]+", action) for action in statement["Action"]), statement
        if statement["Resource"] == [f"arn:aws:s3:::{bucket()}"]:  # the bucket: listing, under prefixes only
            assert statement["Action"] == ["s3:ListBucket"]
            assert list(statement["Condition"]) == ["StringLike"]
            assert list(statement["Condition"]["StringLike"]) == ["s3:prefix"]
            listed |= {
                prefix.removesuffix("*") for prefix in statement["Condition"]["StringLike"]["s3:prefix"]
            }
            continue
        assert "Condition" not in statement
        for resource in statement["Resource"]:
            prefix = resource.removeprefix(f"arn:aws:s3:::{bucket()}/").removesuffix("*")
            allowed.setdefault(prefix, set()).update(statement["Action"])
    assert allowed == OBJECTS[workload]
    assert listed == LISTED.get(workload, set())


def test_the_setup_job_creates_one_user_per_policy_from_that_workloads_secret() -> None:
    kustomization = yaml.safe_load((PLATFORM / "base" / "kustomization.yaml").read_text())
    setup = next(c for c in kustomization["configMapGenerator"] if c["name"] == "minio-setup")
    shipped = {entry.partition("=")[0] for entry in setup["files"]} - {"setup.sh"}
    assert (
        shipped == {f"{workload}.json" for workload in OBJECTS} == {p.name for p in POLICIES.glob("*.json")}
    )
    script = (PLATFORM / "base" / "minio" / "setup.sh").read_text()
    users = re.findall(
        r'^workload_user ([a-z-]+) "\$\{(\w+)_ACCESS_KEY:\?\}" "\$\{(\w+)_SECRET_KEY:\?\}"', script, re.M
    )
    assert sorted(users) == sorted((w, variable(w), variable(w)) for w in OBJECTS)
    env = secret_variables(PLATFORM / "base" / "minio" / "setup-job.yaml")
    for workload in OBJECTS:
        assert env[f"{variable(workload)}_ACCESS_KEY"] == {
            "name": secret(workload),
            "key": "AWS_ACCESS_KEY_ID",
        }
        assert env[f"{variable(workload)}_SECRET_KEY"] == {
            "name": secret(workload),
            "key": "AWS_SECRET_ACCESS_KEY",
        }


# ---------------------------------------------------------------------------------------------------------
# Secrets: one per workload, read by that workload only


DATABASE = {"migrate": privileges.MIGRATOR} | {w: role.user for w, role in privileges.ROLES.items()}
SECRETS = {*DATABASE, *OBJECTS, "platform"}  # every workload's Secret, and the servers' own


def example(overlay: str, workload: str) -> dict[str, str]:
    path = PLATFORM / "overlays" / overlay / "secrets" / f"{workload}.env.example"
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def secrets_read(node: Any) -> set[str]:
    """Every Secret an object's containers name (envFrom, secretKeyRef)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretRef", "secretKeyRef"):
                found.add(value["name"])
            else:
                found |= secrets_read(value)
    elif isinstance(node, list):
        for value in node:
            found |= secrets_read(value)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_makes_one_secret_per_workload_from_its_own_file(overlay: str) -> None:
    kustomization = yaml.safe_load((PLATFORM / "overlays" / overlay / "kustomization.yaml").read_text())
    generated = {g["name"]: g["envs"] for g in kustomization["secretGenerator"]}
    assert generated == {secret(w): [f"secrets/{w}.env"] for w in SECRETS}
    assert {p.name for p in (PLATFORM / "overlays" / overlay / "secrets").glob("*.example")} == {
        f"{w}.env.example" for w in SECRETS
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_secret_holds_its_workloads_credentials_and_no_others(overlay: str) -> None:
    for workload in SECRETS:
        values = example(overlay, workload)
        expected = set()
        if workload in DATABASE:
            expected.add("DANDELION_DB_URL")
            assert (
                urlparse(values["DANDELION_DB_URL"]).username == DATABASE[workload]
            )  # whom grants.sql names
            assert urlparse(values["DANDELION_DB_URL"]).path == f"/{privileges.CATALOG_DATABASE}"
        if workload in OBJECTS:
            expected |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        if workload == "validate-label":
            expected.add("DANDELION_ADMIN_TOKEN")  # nobody else holds the admin's token
        if workload == "mlflow":
            expected = {"MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        if workload == "platform":
            expected = {"MYSQL_ROOT_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
        assert set(values) == expected, workload
    users = [example(overlay, w).get("AWS_ACCESS_KEY_ID") for w in OBJECTS]
    assert len(set(users)) == len(OBJECTS)  # one MinIO user per workload


def workload_objects() -> dict[str, list[dict[str, Any]]]:
    """Each Dandelion workload's manifests: Knative Services, the migrate Job, MLflow, the workflows."""
    objects = {
        name: [yaml.safe_load((PLATFORM / "base" / "functions" / f"{name}.yaml").read_text())]
        for name in ("predict", "ingest-one-url", "validate-label", "web")
    }
    objects["migrate"] = [yaml.safe_load((PLATFORM / "base" / "mysql" / "migrate-job.yaml").read_text())]
    objects["mlflow"] = [yaml.safe_load((PLATFORM / "base" / "mlflow" / "deployment.yaml").read_text())]
    for name in ("extract-images", "train-model"):
        template = yaml.safe_load((PLATFORM / "argo" / f"{name}.yaml").read_text())
        objects[name] = template["spec"]["templates"]
    return objects


def test_each_workload_reads_its_own_secret_and_no_other() -> None:
    for workload, objects in workload_objects().items():
        read = set().union(*(secrets_read(o) for o in objects))
        assert read == ({secret(workload)} if workload in SECRETS else set()), workload


def test_only_the_workflow_steps_that_open_the_catalog_or_the_store_get_credentials() -> None:
    steps = {
        t["name"]: bool(secrets_read(t))
        for w in ("extract-images", "train-model")
        for t in workload_objects()[w]
    }
    assert {name for name, holds in steps.items() if not holds} == {
        "extract",  # the DAGs
        "train",
        "ingest-row",  # calls ingest-one-url
        "summarise",
        "register-model",  # MLflow's registry only
        "roll-out",  # the Kubernetes API, as its service account
    }


def test_the_database_server_creates_the_users_users_sh_reads_from_their_workloads_secrets() -> None:
    script = (PLATFORM / "base" / "mysql" / "users.sh").read_text()
    read = found(r"^for variable in (.+); do$", script).split()
    assert sorted(read) == sorted(f"{variable(w)}_DB_URL" for w in DATABASE)
    env = secret_variables(PLATFORM / "base" / "mysql" / "statefulset.yaml")
    for workload in DATABASE:
        assert env[f"{variable(workload)}_DB_URL"] == {"name": secret(workload), "key": "DANDELION_DB_URL"}
    assert env["MLFLOW_DB_URL"] == {"name": secret("mlflow"), "key": "MLFLOW_BACKEND_STORE_URI"}
    assert "predict" not in DATABASE  # predict has no database user


def test_the_mysql_init_runs_the_grants_after_the_schema() -> None:
    kustomization = yaml.safe_load((PLATFORM / "mysql" / "kustomization.yaml").read_text())
    files = kustomization["configMapGenerator"][0]["files"]
    assert files == ["20-dandelion-catalog.sql=init.sql", "30-dandelion-grants.sql=grants.sql"]
    env = container(PLATFORM / "base" / "mysql" / "statefulset.yaml")["env"]
    assert {"name": "MARIADB_DATABASE", "value": privileges.CATALOG_DATABASE} in env
