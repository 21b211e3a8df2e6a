"""The MinIO policies of platform/ applied by an S3 server that enforces them: moto's server, in its own
process, with IAM authorization switched on after the setup (one user per workload, its policy attached
as a cluster's minio-setup Job attaches it). Each workload's credentials then go through the store code
the workload runs (functions.lib.store.S3Store), on every prefix of the store's layout: what the policy
grants works, the rest is refused by the server.

Where moto differs from MinIO, and so what this does not show: moto does not evaluate the `s3:prefix`
condition of the listing grants (it refuses those listings outright), so the two prefix-bound listings
(train-model's feature cache, MLflow's artifacts) stay checked as documents in
tests/unit/test_least_privilege.py; a listing is shown refused only to the workloads with no listing
grant. A HEAD of a missing object answers 404 to a user allowed s3:GetObject, as on MinIO (AWS answers
403 without s3:ListBucket)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import boto3
import pytest
import requests

from functions.lib.errors import Unavailable
from functions.lib.store import S3Store
from tests.unit.test_least_privilege import DELETE, GET, LISTED, OBJECTS, PUT, SHA, bucket, policy
from workflows.local.processes import free_port, start, stop, wait_healthy

pytestmark = pytest.mark.integration

PREFIXES = sorted({prefix for grants in OBJECTS.values() for prefix in grants})
REGION = "us-east-1"


@dataclass(frozen=True)
class EnforcingS3:
    endpoint: str
    keys: dict[str, tuple[str, str]]  # workload -> (access key id, secret)


@pytest.fixture(scope="module")
def enforcing_s3() -> Iterator[EnforcingS3]:
    """moto's server with the bucket, one user per policy and one object under each prefix; then IAM
    authorization on, for every request from there on."""
    port = free_port()
    server = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{endpoint}/moto-api/data.json", server)
        setup = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "setup"}
        setup["aws_secret_access_key"] = "setup"
        s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
        s3.create_bucket(Bucket=bucket())
        for prefix in PREFIXES:
            s3.put_object(Bucket=bucket(), Key=f"{prefix}present", Body=b"x")
        keys = {}
        for workload in OBJECTS:
            iam.create_user(UserName=workload)
            iam.put_user_policy(
                UserName=workload, PolicyName=workload, PolicyDocument=json.dumps(policy(workload))
            )
            key = iam.create_access_key(UserName=workload)["AccessKey"]
            keys[workload] = (key["AccessKeyId"], key["SecretAccessKey"])
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield EnforcingS3(endpoint, keys)
    finally:
        stop(server)


def store_as(s3: EnforcingS3, credentials: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """The store a workload's code opens, with the credentials its Secret gives it."""
    key_id, secret = credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the first credentials it resolved
    return S3Store(bucket())


def refused(operation: str) -> AbstractContextManager[pytest.ExceptionInfo[Unavailable]]:
    return pytest.raises(Unavailable, match=f"^the object store refused {operation}$")


def test_the_server_refuses_unknown_credentials(
    enforcing_s3: EnforcingS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authorization is really on: keys the server never issued get nothing."""
    unknown = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    with refused("get_object"):
        store_as(enforcing_s3, unknown, monkeypatch).get(f"{PREFIXES[0]}present")


@pytest.mark.parametrize("workload", sorted(OBJECTS))
def test_each_workload_can_do_exactly_what_its_policy_grants_on_each_prefix(
    enforcing_s3: EnforcingS3, monkeypatch: pytest.MonkeyPatch, workload: str
) -> None:
    store = store_as(enforcing_s3, enforcing_s3.keys[workload], monkeypatch)
    for prefix in PREFIXES:
        granted = OBJECTS[workload].get(prefix, set())
        key = f"{prefix}{workload}/{SHA}"
        if PUT in granted:
            store.put(key, b"written")
        else:
            with refused("put_object"):
                store.put(key, b"written")
        if GET in granted:
            assert store.get(f"{prefix}present") == b"x"
            assert store.exists(f"{prefix}present") and not store.exists(f"{prefix}missing")
            if PUT in granted:
                assert store.get(key) == b"written"
        else:
            with refused("get_object"):
                store.get(f"{prefix}present")
            with refused("head_object"):
                store.exists(f"{prefix}present")
        if DELETE in granted:
            store.delete(key)
            assert not store.exists(key)
        else:
            with refused("delete_object"):
                store.delete(f"{prefix}present")


@pytest.mark.parametrize("workload", sorted(set(OBJECTS) - set(LISTED)))
def test_a_workload_with_no_listing_grant_cannot_list_the_bucket(
    enforcing_s3: EnforcingS3, monkeypatch: pytest.MonkeyPatch, workload: str
) -> None:
    from botocore.exceptions import ClientError

    store = store_as(enforcing_s3, enforcing_s3.keys[workload], monkeypatch)
    for prefix in ("", *PREFIXES):
        with pytest.raises(ClientError, match="AccessDenied"):
            list(store.keys(prefix))
