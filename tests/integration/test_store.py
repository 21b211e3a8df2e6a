"""The object store on file:// and on S3 through moto's server: one interface, whole-object writes."""

import os
from pathlib import Path

import pytest

from functions.lib.errors import NotFound, Unavailable
from functions.lib.store import FileStore, S3Store, open_store
from tests.support import s3_environment

pytestmark = pytest.mark.integration


def test_put_get_exists_keys_url(store_url: str) -> None:
    store = open_store(store_url)
    assert not store.exists("raw/grass/a.jpg")
    store.put("raw/grass/a.jpg", b"first", "image/jpeg")
    store.put("raw/grass/a.jpg", b"second version", "image/jpeg")
    store.put("raw/dandelion/b.jpg", b"b", "image/jpeg")
    assert store.get("raw/grass/a.jpg") == b"second version"
    assert store.exists("raw/grass/a.jpg")
    assert list(store.keys("raw/")) == ["raw/dandelion/b.jpg", "raw/grass/a.jpg"]
    assert list(store.keys("raw/grass/")) == ["raw/grass/a.jpg"]
    assert store.url("raw/grass/a.jpg").endswith("/raw/grass/a.jpg")
    with pytest.raises(NotFound, match=r"no object 'raw/none\.jpg'"):
        store.get("raw/none.jpg")
    store.delete("raw/dandelion/b.jpg")
    store.delete("raw/dandelion/b.jpg")  # idempotent
    assert list(store.keys("raw/")) == ["raw/grass/a.jpg"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        FileStore(tmp_path).put(key, b"x")


def test_a_failed_file_write_leaves_neither_object_nor_temporary(tmp_path: Path, monkeypatch) -> None:
    store = FileStore(tmp_path)
    store.put("models/champion.json", b'{"version": "1"}')

    def crash(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put("models/champion.json", b'{"version": "2"}')
    with pytest.raises(OSError, match="disk full"):
        store.put("models/new.json", b"{}")
    assert store.get("models/champion.json") == b'{"version": "1"}'
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["champion.json"]


def test_an_unreachable_s3_endpoint_is_unavailable_not_a_crash(monkeypatch) -> None:
    from workflows.local.processes import free_port

    for name, value in s3_environment(f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3Store("bucket")
    with pytest.raises(Unavailable, match="the object store is unavailable"):
        store.put("raw/x.jpg", b"x")
