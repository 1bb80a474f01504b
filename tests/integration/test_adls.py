"""AdlsStorage specifics: the real azure-storage-file-datalake SDK against the local ADLS Gen2
stand-in (tests/adls_standin.py), which verifies Shared Key signatures like Azure does."""

from __future__ import annotations

import base64
import socket
import time
import uuid

import pytest
from adls_standin import DEFAULT_KEY

from mlcore.storage import (
    AdlsStorage,
    StorageAuthError,
    StorageKeyError,
    StorageNotFoundError,
    StorageUnreachableError,
    storage_from_url,
)


@pytest.fixture(scope="module")
def server(adls_server):
    return adls_server


def _url(container: str) -> str:
    return f"abfss://{container}@devstoreaccount1.dfs.core.windows.net/prefix"


@pytest.fixture
def adls_env(server, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", server.endpoint)
    monkeypatch.setenv("AZURE_STORAGE_KEY", DEFAULT_KEY)
    monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN", raising=False)
    return server


def test_roundtrip_goes_through_the_wire_protocol(adls_env):
    container = f"c{uuid.uuid4().hex[:8]}"
    store = storage_from_url(_url(container), create=True)
    store.write("k/v.bin", b"0123456789" * 1000, chunk_size=4096)
    assert store.read_range("k/v.bin", 4095, 3) == b"567"
    methods = [(m, p.split("?")[1] if "?" in p else "") for m, p in adls_env.requests]
    appends = [q for m, q in methods if m == "PATCH" and "action=append" in q]
    assert len(appends) == 3  # 10000 bytes in 4096-byte chunks
    assert any(m == "PATCH" and "action=flush&position=10000" in q for m, q in methods)
    # Stored under the prefix in the filesystem, as an ADLS path.
    assert bytes(adls_env.filesystems[container]["prefix/k/v.bin"].data) == b"0123456789" * 1000


def test_appended_data_invisible_until_flush(adls_env):
    container = f"c{uuid.uuid4().hex[:8]}"
    store = storage_from_url(_url(container), create=True)
    client = store._fs.get_file_client("prefix/raw.bin")
    client.create_file()
    client.append_data(b"abc", offset=0, length=3)
    assert store.size("raw.bin") == 0
    client.flush_data(3)
    assert store.read("raw.bin") == b"abc"


def test_wrong_key_gives_clear_auth_error(adls_env, monkeypatch):
    wrong = base64.b64encode(b"not the account key at all, sorry").decode()
    monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
    store = storage_from_url(_url("anything"))
    with pytest.raises(StorageAuthError, match="AZURE_STORAGE_KEY"):
        store.write("a.bin", b"x")
    with pytest.raises(StorageAuthError, match="AZURE_STORAGE_KEY"):
        store.read("a.bin")
    with pytest.raises(StorageAuthError):
        store.list()


def test_unsigned_or_tampered_requests_are_rejected(server):
    import http.client

    host, port = server.endpoint.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/devstoreaccount1/x?resource=filesystem")
    response = conn.getresponse()
    response.read()
    assert response.status == 403
    assert response.getheader("x-ms-error-code") == "AuthenticationFailed"
    conn.request(
        "GET",
        "/devstoreaccount1/x?resource=filesystem",
        headers={"Authorization": "SharedKey devstoreaccount1:AAAA", "x-ms-date": "now"},
    )
    response = conn.getresponse()
    response.read()
    assert response.status == 403


def test_unreachable_endpoint_names_it(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", endpoint)
    monkeypatch.setenv("AZURE_STORAGE_KEY", DEFAULT_KEY)
    monkeypatch.setenv("AZURE_STORAGE_RETRIES", "0")
    store = storage_from_url(_url("c"))
    start = time.monotonic()
    with pytest.raises(StorageUnreachableError, match=f"127.0.0.1:{port}"):
        store.read("a.bin")
    assert time.monotonic() - start < 30  # fails, does not hang


def test_missing_filesystem_and_key(adls_env):
    store = storage_from_url(_url(f"missing{uuid.uuid4().hex[:6]}"))
    with pytest.raises(StorageNotFoundError):
        store.write("a.bin", b"x")
    created = storage_from_url(_url(f"c{uuid.uuid4().hex[:8]}"), create=True)
    with pytest.raises(StorageNotFoundError, match="scenes/none.npy"):
        created.read("scenes/none.npy")


def test_dotdot_refused_before_any_request(adls_env):
    store = AdlsStorage(
        adls_env.endpoint,
        "fs",
        "p",
        {"account_name": "devstoreaccount1", "account_key": DEFAULT_KEY},
    )
    before = len(adls_env.requests)
    for bad in ("../escape.bin", "a/../../b", "/abs"):
        with pytest.raises(StorageKeyError):
            store.write(bad, b"x")
    assert len(adls_env.requests) == before
    with pytest.raises(StorageKeyError):
        AdlsStorage(adls_env.endpoint, "fs", "../up", None)
