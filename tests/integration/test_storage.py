"""Storage behaviour, run identically on LocalStorage and on AdlsStorage (real Azure SDK against
the local ADLS stand-in in tests/adls_standin.py)."""

from __future__ import annotations

import io
import os
import uuid

import pytest
from adls_standin import DEFAULT_KEY

from mlcore.storage import (
    AdlsStorage,
    LocalStorage,
    StorageError,
    StorageKeyError,
    StorageNotFoundError,
    download_file,
    storage_from_url,
    upload_file,
    validate_key,
)


@pytest.fixture(params=["local", "adls"])
def storage(request, tmp_path, monkeypatch):
    if request.param == "local":
        return storage_from_url(str(tmp_path / "store"))
    server = request.getfixturevalue("adls_server")
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", server.endpoint)
    monkeypatch.setenv("AZURE_STORAGE_KEY", DEFAULT_KEY)
    container = f"fs{uuid.uuid4().hex[:8]}"
    store = storage_from_url(
        f"abfss://{container}@devstoreaccount1.dfs.core.windows.net/data/v1", create=True
    )
    assert isinstance(store, AdlsStorage)
    return store


class FailingReader(io.RawIOBase):
    """A stream that delivers ``good`` bytes, then fails like a dropped network read."""

    def __init__(self, good: int):
        self.left = good

    def readable(self):
        return True

    def read(self, size=-1):
        if self.left <= 0:
            raise OSError("simulated read failure mid-upload")
        n = min(size if size > 0 else self.left, self.left)
        self.left -= n
        return b"x" * n


def test_write_multichunk_read_and_ranges(storage):
    data = os.urandom(1_000_003)
    assert storage.write("scenes/big.bin", io.BytesIO(data), chunk_size=256 * 1024) == len(data)
    assert storage.read("scenes/big.bin") == data
    assert storage.size("scenes/big.bin") == len(data)
    assert storage.read_range("scenes/big.bin", 12345, 1000) == data[12345:13345]
    assert storage.read_range("scenes/big.bin", len(data) - 3, 100) == data[-3:]
    assert storage.read_range("scenes/big.bin", len(data), 10) == b""
    with storage.open("scenes/big.bin") as handle:
        handle.seek(500_000)
        assert handle.read(70_000) == data[500_000:570_000]


def test_write_bytes_overwrite_and_empty(storage):
    storage.write("a.txt", b"first")
    storage.write("a.txt", b"second")
    assert storage.read("a.txt") == b"second"
    storage.write("empty.bin", b"")
    assert storage.read("empty.bin") == b""
    assert storage.size("empty.bin") == 0


def test_list_exists_delete(storage):
    for key in ["b/2.npy", "a/1.npy", "a/sub/3.npy", "ab.txt"]:
        storage.write(key, key.encode())
    assert storage.list() == ["a/1.npy", "a/sub/3.npy", "ab.txt", "b/2.npy"]
    assert storage.list("a/") == ["a/1.npy", "a/sub/3.npy"]
    assert storage.list("a") == ["a/1.npy", "a/sub/3.npy", "ab.txt"]
    assert storage.list("nothing/") == []
    assert storage.exists("a/1.npy") and not storage.exists("a/9.npy")
    storage.delete("a/1.npy")
    assert not storage.exists("a/1.npy")
    assert storage.list("a/") == ["a/sub/3.npy"]
    with pytest.raises(StorageNotFoundError, match="a/1.npy"):
        storage.delete("a/1.npy")


def test_missing_key_errors_name_the_key(storage):
    for call in (
        lambda: storage.read("no/such.npy"),
        lambda: storage.read_range("no/such.npy", 0, 10),
        lambda: storage.size("no/such.npy"),
        lambda: storage.open("no/such.npy"),
    ):
        with pytest.raises(StorageNotFoundError, match="no/such.npy"):
            call()


def test_failed_upload_leaves_nothing(storage):
    with pytest.raises(OSError, match="simulated"):
        storage.write("scenes/x.npy", FailingReader(300_000), chunk_size=100_000)
    assert not storage.exists("scenes/x.npy")
    assert storage.list() == []
    # A failed overwrite keeps the previous complete object.
    storage.write("scenes/x.npy", b"complete")
    with pytest.raises(OSError):
        storage.write("scenes/x.npy", FailingReader(150_000), chunk_size=100_000)
    assert storage.read("scenes/x.npy") == b"complete"
    assert storage.list() == ["scenes/x.npy"]


@pytest.mark.parametrize(
    "bad", ["../x", "a/../../x", "/etc/passwd", "a\\b", "a//b", "C:/x", "a\x00b", "", "a/"]
)
def test_bad_keys_refused(storage, bad):
    with pytest.raises(StorageKeyError):
        storage.write(bad, b"no")
    with pytest.raises(StorageKeyError):
        storage.read(bad)


def test_upload_download_helpers(storage, tmp_path):
    source = tmp_path / "in.bin"
    data = os.urandom(300_000)
    source.write_bytes(data)
    seen = []
    upload_file(
        storage,
        source,
        "ingress/in.bin",
        progress=lambda d, t, m="": seen.append((d, t)),
        chunk_size=100_000,
    )
    assert seen[-1] == (len(data), len(data)) and len(seen) == 3
    target = download_file(storage, "ingress/in.bin", tmp_path / "out" / "copy.bin")
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.bin"]


def test_validate_key_messages():
    assert validate_key("scenes/collage.npy") == "scenes/collage.npy"
    with pytest.raises(StorageKeyError, match=r"'\.\.' segment"):
        validate_key("a/../b")
    with pytest.raises(StorageKeyError, match="absolute"):
        validate_key("/a")
    with pytest.raises(StorageKeyError, match="control"):
        validate_key("a\nb")


def test_local_symlink_cannot_escape_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    store = LocalStorage(tmp_path / "root")
    os.symlink(outside, tmp_path / "root" / "link")
    with pytest.raises(StorageKeyError, match="outside the storage root"):
        store.read("link/secret.txt")
    with pytest.raises(StorageKeyError, match="outside the storage root"):
        store.write("link/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    assert store.local_path("a/b.npy") == (tmp_path / "root" / "a" / "b.npy").resolve()


def test_storage_from_url_forms(tmp_path, monkeypatch):
    assert isinstance(storage_from_url(str(tmp_path)), LocalStorage)
    assert storage_from_url(tmp_path.as_uri()).root == tmp_path.resolve()
    monkeypatch.setenv("AZURE_STORAGE_KEY", DEFAULT_KEY)
    monkeypatch.delenv("AZURE_STORAGE_ENDPOINT", raising=False)
    abfss = storage_from_url("abfss://scenes@acct.dfs.core.windows.net/pre/fix")
    assert (abfss.account_url, abfss.filesystem, abfss.prefix) == (
        "https://acct.dfs.core.windows.net",
        "scenes",
        "pre/fix",
    )
    https = storage_from_url("https://acct.dfs.core.windows.net/scenes")
    assert (https.filesystem, https.prefix) == ("scenes", "")
    for bad in ("abfss://acct.dfs.core.windows.net/x", "s3://bucket/x", "https://example.com/x"):
        with pytest.raises(StorageError, match="URL"):
            storage_from_url(bad)
