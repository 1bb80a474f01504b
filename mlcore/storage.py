"""Storage: one small interface over the local filesystem and Azure Data Lake Storage Gen2.

Keys are relative POSIX paths (``scenes/collage.npy``), validated so that no key can escape
the storage root. Writes stream in chunks and are atomic: a failed upload leaves nothing under
the final name (local: temp file + ``os.replace``; ADLS: upload to a temp path, then rename).

``storage_from_url`` turns configuration into a backend:

* ``/some/dir`` or ``file:///some/dir`` -> :class:`LocalStorage`
* ``abfss://container@account.dfs.core.windows.net/prefix`` or
  ``https://account.dfs.core.windows.net/container/prefix`` -> :class:`AdlsStorage`, with
  credentials from the environment: ``AZURE_STORAGE_KEY`` (account key),
  ``AZURE_STORAGE_SAS_TOKEN``, else ``azure.identity.DefaultAzureCredential``.
  ``AZURE_STORAGE_ENDPOINT`` overrides the account URL (e.g. a local stand-in).
"""

from __future__ import annotations

import io
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlparse

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
# Temp uploads live beside their final name (same directory, so the final rename is atomic)
# and are hidden from list().
PARTIAL_MARKER = ".partial-"

Progress = Callable[..., None]


class StorageError(Exception):
    """A storage operation failed; the message says what and what to do."""


class StorageKeyError(StorageError, ValueError):
    """The key is not a valid relative POSIX key."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The key does not exist in the storage."""


class StorageAuthError(StorageError, PermissionError):
    """The storage refused our credentials."""


class StorageUnreachableError(StorageError, ConnectionError):
    """The storage endpoint could not be reached."""


_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative POSIX key, else raise :class:`StorageKeyError`."""
    if not isinstance(key, str):
        raise StorageKeyError(f"storage key must be a string, got {type(key).__name__}")
    if not key:
        raise StorageKeyError("storage key is empty; give a relative path like 'scenes/a.npy'")
    if _CONTROL_RE.search(key):
        raise StorageKeyError(f"storage key {key!r} contains control characters")
    if "\\" in key:
        raise StorageKeyError(f"storage key {key!r} contains a backslash; use '/' separators")
    if key.startswith("/"):
        raise StorageKeyError(f"storage key {key!r} is absolute; keys are relative to the root")
    if _DRIVE_RE.match(key):
        raise StorageKeyError(f"storage key {key!r} starts with a drive letter; keys are relative")
    for segment in key.split("/"):
        if segment == "":
            raise StorageKeyError(
                f"storage key {key!r} has an empty path segment ('//' or '/' end)"
            )
        if segment in (".", ".."):
            raise StorageKeyError(f"storage key {key!r} contains a '{segment}' segment")
    return key


def _validate_prefix(prefix: str) -> str:
    """A list() prefix: '' or a key prefix, optionally ending in '/'."""
    if prefix:
        validate_key(prefix.rstrip("/") or "/")
    return prefix


def _iter_chunks(
    data: bytes | bytearray | memoryview | BinaryIO, chunk_size: int
) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])
        return
    if not hasattr(data, "read"):
        raise TypeError(f"write() takes bytes or a binary file-like object, got {type(data)!r}")
    while True:
        chunk = data.read(chunk_size)
        if not chunk:
            return
        if isinstance(chunk, str):
            raise TypeError("write() needs a binary file-like object (opened with 'rb')")
        yield chunk


def _is_partial_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and PARTIAL_MARKER in base


class Storage(ABC):
    """Key/value byte storage with streaming reads and atomic streaming writes."""

    #: URL that ``storage_from_url`` turns back into an equivalent storage (no secrets in it).
    root_url: str

    @abstractmethod
    def open(self, key: str, mode: str = "rb") -> BinaryIO:
        """A streaming, seekable binary reader for ``key``."""

    def read(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    @abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes starting at ``offset`` (shorter only at the end of the object)."""

    @abstractmethod
    def write(self, key: str, data: bytes | BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
        """Stream ``data`` to ``key`` atomically; return the number of bytes written."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix``."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; raises :class:`StorageNotFoundError` if it does not exist."""

    @abstractmethod
    def url(self, key: str) -> str:
        """A URL naming ``key`` (for logs and links; carries no credentials)."""

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the backend is local, else None."""
        return None

    @staticmethod
    def _check_range(offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise ValueError(
                f"read_range needs offset >= 0 and length >= 0, got {offset}, {length}"
            )


# --------------------------------------------------------------------------------------------
# Local filesystem


class LocalStorage(Storage):
    """Keys are files under ``root``; no key can resolve outside it, symlinks included."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StorageKeyError(
                # The message names the key only: it reaches users, the root is the server's.
                f"storage key {key!r} resolves outside the storage root"
            )
        return path

    def _existing_file(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise StorageNotFoundError(f"no such key {key!r} in {self!r}")
        return path

    def open(self, key: str, mode: str = "rb") -> BinaryIO:
        if mode != "rb":
            raise ValueError(f"open() supports mode 'rb' only (got {mode!r}); use write() to store")
        return open(self._existing_file(key), "rb")  # noqa: SIM115 - caller closes

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        with open(self._existing_file(key), "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def write(self, key: str, data: bytes | BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path(key)  # re-check: mkdir may not follow a symlink out, but be sure
        temp = path.with_name(f".{path.name}{PARTIAL_MARKER}{uuid.uuid4().hex}")
        written = 0
        try:
            with open(temp, "xb") as handle:
                for chunk in _iter_chunks(data, chunk_size):
                    handle.write(chunk)
                    written += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return written

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        # Walk only the directory the prefix names, not the whole tree.
        base_dir = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base_dir.is_dir():
            return []
        keys = []
        for dirpath, _dirnames, filenames in os.walk(base_dir):
            for name in filenames:
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix) and not _is_partial_name(rel):
                    keys.append(rel)
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._existing_file(key).stat().st_size

    def delete(self, key: str) -> None:
        self._existing_file(key).unlink()

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path:
        return self._path(key)


# --------------------------------------------------------------------------------------------
# Azure Data Lake Storage Gen2


class _RangeReader(io.RawIOBase):
    """Seekable raw reader fetching byte ranges on demand (wrapped in a BufferedReader)."""

    def __init__(self, storage: AdlsStorage, key: str, size: int):
        self._storage, self._key, self._size, self._pos = storage, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._storage.read_range(self._key, self._pos, want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class AdlsStorage(Storage):
    """Keys are files under ``prefix`` in one ADLS Gen2 filesystem (container)."""

    def __init__(
        self,
        account_url: str,
        filesystem: str,
        prefix: str = "",
        credential=None,
        *,
        root_url: str | None = None,
        create_filesystem: bool = False,
        retry_total: int | None = None,
        connection_timeout: float = 10.0,
    ):
        from azure.storage.filedatalake import DataLakeServiceClient

        if not filesystem:
            raise StorageError("ADLS storage needs a filesystem (container) name")
        self.account_url = account_url.rstrip("/")
        self.filesystem = filesystem
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        if retry_total is None:
            retry_total = int(os.environ.get("AZURE_STORAGE_RETRIES", "2"))
        self._service = DataLakeServiceClient(
            account_url=self.account_url,
            credential=credential,
            retry_total=retry_total,
            connection_timeout=connection_timeout,
        )
        self._fs = self._service.get_file_system_client(filesystem)
        self.root_url = root_url or f"{self.account_url}/{filesystem}/{self.prefix}".rstrip("/")
        if create_filesystem:
            self.create_filesystem()

    def __repr__(self) -> str:
        return f"AdlsStorage({self.account_url!r}, {self.filesystem!r}, prefix={self.prefix!r})"

    def _path(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str | None, action: str):
        """Translate Azure SDK exceptions into StorageErrors that say what to do."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
        )

        where = f"{self.account_url}/{self.filesystem}"
        try:
            yield
        except ResourceNotFoundError as exc:
            code = getattr(exc, "error_code", None) or ""
            if "FilesystemNotFound" in str(code) or "ContainerNotFound" in str(code):
                raise StorageNotFoundError(
                    f"ADLS filesystem {self.filesystem!r} does not exist at {self.account_url} "
                    f"(while trying to {action})"
                ) from exc
            raise StorageNotFoundError(f"no such key {key!r} in {where} ({action})") from exc
        except ClientAuthenticationError as exc:
            raise StorageAuthError(
                f"ADLS refused our credentials for {where} ({action}): check AZURE_STORAGE_KEY "
                f"or AZURE_STORAGE_SAS_TOKEN (or the Azure identity in use)"
            ) from exc
        except ServiceRequestError as exc:
            raise StorageUnreachableError(
                f"cannot reach the ADLS endpoint {self.account_url} ({action}): {exc}. Check the "
                f"account URL / AZURE_STORAGE_ENDPOINT and the network"
            ) from exc
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise StorageAuthError(
                    f"ADLS denied access to {where} ({action}, {exc.error_code}): check "
                    f"AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN and their permissions"
                ) from exc
            raise StorageError(
                f"ADLS error {exc.status_code} {exc.error_code} on {key or where} ({action}): "
                f"{exc.reason}"
            ) from exc

    def create_filesystem(self) -> None:
        """Create the filesystem (container) if it does not exist yet."""
        from azure.core.exceptions import ResourceExistsError

        with self._errors(None, "create the filesystem"):
            try:
                self._fs.create_file_system()
            except ResourceExistsError:
                pass

    def open(self, key: str, mode: str = "rb") -> BinaryIO:
        if mode != "rb":
            raise ValueError(f"open() supports mode 'rb' only (got {mode!r}); use write() to store")
        return io.BufferedReader(_RangeReader(self, key, self.size(key)), DEFAULT_CHUNK_SIZE)

    def read(self, key: str) -> bytes:
        path = self._path(key)
        with self._errors(key, "read"):
            return self._fs.get_file_client(path).download_file().readall()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        if length == 0:
            return b""
        path = self._path(key)
        with self._errors(key, f"read bytes {offset}..{offset + length}"):
            client = self._fs.get_file_client(path)
            try:
                return client.download_file(offset=offset, length=length).readall()
            except Exception as exc:
                # A range starting at/after the end is "416 InvalidRange": that is an empty read.
                if getattr(exc, "status_code", None) == 416:
                    client.get_file_properties()  # still raise not-found for a missing key
                    return b""
                raise

    def write(self, key: str, data: bytes | BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
        path = self._path(key)
        directory, _, name = path.rpartition("/")
        temp_name = f".{name}{PARTIAL_MARKER}{uuid.uuid4().hex}"
        temp_path = f"{directory}/{temp_name}" if directory else temp_name
        written = 0
        with self._errors(key, "write"):
            temp = self._fs.get_file_client(temp_path)
            temp.create_file()
            try:
                for chunk in _iter_chunks(data, chunk_size):
                    temp.append_data(chunk, offset=written, length=len(chunk))
                    written += len(chunk)
                temp.flush_data(written)
                temp.rename_file(f"{self.filesystem}/{path}")
            except BaseException:
                try:
                    temp.delete_file()
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
                raise
        return written

    def list(self, prefix: str = "") -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        _validate_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        directory = full_prefix.rsplit("/", 1)[0] if "/" in full_prefix else None
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        with self._errors(prefix, "list"):
            try:
                for item in self._fs.get_paths(path=directory, recursive=True):
                    if item.is_directory or not item.name.startswith(full_prefix):
                        continue
                    if not _is_partial_name(item.name):
                        keys.append(item.name[strip:])
            except ResourceNotFoundError as exc:
                if "PathNotFound" in str(getattr(exc, "error_code", "")):
                    return []
                raise
        return sorted(keys)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with self._errors(key, "check existence"):
            return self._fs.get_file_client(path).exists()

    def size(self, key: str) -> int:
        path = self._path(key)
        with self._errors(key, "get size"):
            return self._fs.get_file_client(path).get_file_properties().size

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors(key, "delete"):
            self._fs.get_file_client(path).delete_file()

    def url(self, key: str) -> str:
        return f"{self.account_url}/{self.filesystem}/{quote(self._path(key))}"


# --------------------------------------------------------------------------------------------
# Configuration


def _adls_credential(account_name: str):
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        return {"account_name": account_name, "account_key": key}
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        return sas.lstrip("?")
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:  # pragma: no cover - azure-identity is in requirements
        raise StorageAuthError(
            "no ADLS credentials: set AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or install "
            "azure-identity for DefaultAzureCredential"
        ) from exc
    return DefaultAzureCredential()


def storage_from_url(url: str | os.PathLike, *, create: bool = False) -> Storage:
    """Build a storage from a path, ``file://``, ``abfss://`` or ``https://...dfs...`` URL.

    ``create=True`` creates the local directory (always) or the ADLS filesystem if missing.
    """
    if isinstance(url, os.PathLike):
        return LocalStorage(url)
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage URL must be a non-empty string, got {url!r}")
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return LocalStorage(url)
    if scheme == "file":
        return LocalStorage(unquote(parsed.path))
    if scheme in ("abfss", "abfs"):
        filesystem, _, host = parsed.netloc.partition("@")
        if not filesystem or not host:
            raise StorageError(
                f"bad ADLS URL {url!r}: expected abfss://<container>@<account>.dfs.core.windows.net/"
                "<prefix>"
            )
        account_name = host.split(".", 1)[0]
        account_url = f"https://{host}"
        prefix = unquote(parsed.path).strip("/")
    elif scheme in ("https", "http"):
        parts = unquote(parsed.path).strip("/").split("/", 1)
        if ".dfs." not in parsed.netloc or not parts[0]:
            raise StorageError(
                f"bad ADLS URL {url!r}: expected https://<account>.dfs.core.windows.net/<container>"
                "/<prefix>"
            )
        account_name = parsed.netloc.split(".", 1)[0]
        account_url = f"{scheme}://{parsed.netloc}"
        filesystem, prefix = parts[0], (parts[1] if len(parts) > 1 else "")
    else:
        raise StorageError(
            f"unsupported storage URL {url!r}: use a path, file://, abfss:// or https://...dfs..."
        )
    account_url = os.environ.get("AZURE_STORAGE_ENDPOINT") or account_url
    return AdlsStorage(
        account_url,
        filesystem,
        prefix,
        _adls_credential(account_name),
        root_url=url,
        create_filesystem=create,
    )


# --------------------------------------------------------------------------------------------
# Ingress / egress


class _ProgressReader(io.RawIOBase):
    def __init__(self, handle: BinaryIO, total: int, progress: Progress | None, label: str):
        self._handle, self._total, self._progress, self._label, self._done = (
            handle,
            total,
            progress,
            label,
            0,
        )

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._done += len(data)
        if self._progress and data:
            self._progress(self._done, self._total, self._label)
        return data


def upload_file(
    storage: Storage,
    local_path: str | os.PathLike,
    key: str,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Ingress: stream a local file into ``storage`` under ``key``; returns bytes written."""
    local_path = Path(local_path)
    if not local_path.is_file():
        raise StorageNotFoundError(f"cannot upload {local_path}: no such file")
    total = local_path.stat().st_size
    with open(local_path, "rb") as handle:
        reader = _ProgressReader(handle, total, progress, f"uploading {local_path.name}")
        return storage.write(key, reader, chunk_size=chunk_size)


def download_file(
    storage: Storage,
    key: str,
    local_path: str | os.PathLike,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Path:
    """Egress: stream ``key`` to ``local_path`` (atomically: temp file + rename)."""
    local_path = Path(local_path)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    total = storage.size(key)
    temp = local_path.with_name(f".{local_path.name}{PARTIAL_MARKER}{uuid.uuid4().hex}")
    done = 0
    try:
        with storage.open(key) as source, open(temp, "wb") as target:
            while chunk := source.read(chunk_size):
                target.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, f"downloading {key}")
        os.replace(temp, local_path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return local_path


__all__ = [
    "AdlsStorage",
    "DEFAULT_CHUNK_SIZE",
    "LocalStorage",
    "Storage",
    "StorageAuthError",
    "StorageError",
    "StorageKeyError",
    "StorageNotFoundError",
    "StorageUnreachableError",
    "download_file",
    "storage_from_url",
    "upload_file",
    "validate_key",
]
