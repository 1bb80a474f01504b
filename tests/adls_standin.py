"""A local STAND-IN for the Azure Data Lake Storage Gen2 endpoint, for tests only.

Azurite does not serve the DFS (Data Lake) endpoint, so this small threaded HTTP server speaks
the subset of the real wire protocol that ``azure-storage-file-datalake`` uses, for both of the
endpoints that SDK talks to (it routes some calls through the Blob API):

* Blob: container create/properties/delete (``?restype=container``), blob properties (HEAD),
  ranged download (GET with ``x-ms-range`` / ``Range``: 206 + Content-Range, 416 past the end).
* DFS: filesystem create (``PUT ?resource=filesystem``), path create (``PUT ?resource=file`` or
  ``directory``), rename (``PUT`` with ``x-ms-rename-source``), append
  (``PATCH ?action=append&position=N``; data is invisible until flushed), flush
  (``PATCH ?action=flush&position=N``), list paths (``GET ?resource=filesystem&recursive=..
  &directory=..``, JSON), delete (``DELETE``, ``recursive``).

Every request must carry a valid Shared Key signature (HMAC-SHA256 over the canonical string
Azure defines, checked against the account key); anything else gets 403 AuthenticationFailed,
as Azure answers. URLs are path-style, like Azurite: ``http://127.0.0.1:PORT/<account>/<fs>/<path>``.
State lives in memory. Not a general emulator: no leases, ACLs, SAS, or blob block APIs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

DEFAULT_ACCOUNT = "devstoreaccount1"
# The well-known Azurite development key: a public test value, not a secret.
DEFAULT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SIGNED_HEADERS = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
]


class _Path:
    def __init__(self, is_dir: bool):
        self.is_dir = is_dir
        self.data = bytearray()
        self.pending = bytearray()  # appended but not yet flushed: invisible to readers
        self.created = time.time()
        self.touch()

    def touch(self):
        self.modified = time.time()
        self.etag = f'"0x{uuid.uuid4().hex[:16].upper()}"'


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _query(raw: str) -> dict[str, str]:
    out = {}
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[unquote(name).lower()] = unquote(value)
    return out


class AdlsStandIn:
    """Run with ``with AdlsStandIn() as adls: ...``; ``adls.endpoint`` is the account URL."""

    def __init__(self, account: str = DEFAULT_ACCOUNT, key: str = DEFAULT_KEY, log: bool = False):
        self.account, self.key, self.log = account, key, log
        self.filesystems: dict[str, dict[str, _Path]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query) seen, for debugging
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{self.account}"

    def start(self) -> AdlsStandIn:
        standin = self

        class Handler(_Handler):
            pass

        Handler.standin = standin
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> AdlsStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- Shared Key -------------------------------------------------------------------------
    def expected_signature(self, method: str, raw_path: str, raw_query: str, headers) -> str:
        lower = {k.lower(): v for k, v in headers.items()}
        values = [lower.get(name, "") for name in SIGNED_HEADERS]
        if lower.get("content-length") == "0":
            values[SIGNED_HEADERS.index("content-length")] = ""
        # Azure's header collation ignores '-' at the first level (see the SDK's comparator).
        ms_headers = sorted(
            ((k, v) for k, v in lower.items() if k.startswith("x-ms-")),
            key=lambda kv: (kv[0].replace("-", ""), kv[0]),
        )
        canonical = "".join(f"{k}:{v}\n" for k, v in ms_headers)
        resource = f"/{self.account}{raw_path}"
        for name, value in sorted(_query(raw_query).items()):
            resource += f"\n{name}:{value}"
        string_to_sign = f"{method}\n" + "\n".join(values) + "\n" + canonical + resource
        digest = hmac.new(
            base64.b64decode(self.key), string_to_sign.encode("utf-8"), hashlib.sha256
        ).digest()
        return base64.b64encode(digest).decode()

    def check_auth(self, method, raw_path, raw_query, headers) -> None:
        auth = headers.get("Authorization", "")
        if not auth.startswith(f"SharedKey {self.account}:"):
            raise _Error(403, "AuthenticationFailed", "stand-in accepts Shared Key auth only")
        given = auth.split(":", 1)[1]
        expected = self.expected_signature(method, raw_path, raw_query, headers)
        if not hmac.compare_digest(given, expected):
            raise _Error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization "
                "header is formed correctly including the signature.",
            )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: AdlsStandIn

    def log_message(self, fmt, *args):
        if self.standin.log:
            super().log_message(fmt, *args)

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-version", self.headers.get("x-ms-version", "2021-06-08"))
        self.send_header("Date", formatdate(usegmt=True))
        headers = {"Content-Length": len(body), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _dispatch(self, method: str):
        standin = self.standin
        split = urlsplit(self.path)
        body = self._body()
        standin.requests.append((method, self.path))
        try:
            standin.check_auth(method, split.path, split.query, self.headers)
            parts = split.path.lstrip("/").split("/", 2)
            if parts[0] != standin.account:
                raise _Error(404, "ResourceNotFound", f"no account {parts[0]!r}")
            fs = unquote(parts[1]) if len(parts) > 1 else ""
            path = unquote(parts[2]).strip("/") if len(parts) > 2 else ""
            query = _query(split.query)
            with standin.lock:
                status, out, headers = self._route(method, fs, path, query, body)
            self._send(status, out, headers)
        except _Error as err:
            payload = json.dumps({"error": {"code": err.code, "message": err.message}}).encode()
            headers = {"x-ms-error-code": err.code, "Content-Type": "application/json"}
            self._send(err.status, payload, {**headers, **err.headers})

    def _fs(self, fs: str) -> dict[str, _Path]:
        if fs not in self.standin.filesystems:
            raise _Error(
                404, "FilesystemNotFound", f"The specified filesystem {fs} does not exist."
            )
        return self.standin.filesystems[fs]

    @staticmethod
    def _file(files: dict[str, _Path], path: str, blob_api: bool) -> _Path:
        entry = files.get(path)
        if entry is None:
            raise _Error(404, "BlobNotFound" if blob_api else "PathNotFound", f"{path} not found")
        return entry

    @staticmethod
    def _props(entry: _Path) -> dict:
        headers = {
            "Last-Modified": formatdate(entry.modified, usegmt=True),
            "ETag": entry.etag,
            "x-ms-creation-time": formatdate(entry.created, usegmt=True),
            "x-ms-resource-type": "directory" if entry.is_dir else "file",
            "x-ms-blob-type": "BlockBlob",
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.is_dir:
            headers["x-ms-meta-hdi_isfolder"] = "true"
        return headers

    @staticmethod
    def _make_parents(files: dict[str, _Path], path: str):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent in files and not files[parent].is_dir:
                raise _Error(409, "PathConflict", f"{parent} is a file")
            files.setdefault(parent, _Path(is_dir=True))

    def _route(self, method, fs, path, query, body):
        filesystems = self.standin.filesystems
        is_fs_level = not path
        if is_fs_level:
            if method == "PUT" and (query.get("restype") == "container" or "resource" in query):
                if fs in filesystems:
                    raise _Error(409, "ContainerAlreadyExists", "The specified container exists.")
                filesystems[fs] = {}
                return 201, b"", {"ETag": '"0x1"', "Last-Modified": formatdate(usegmt=True)}
            if method in ("HEAD", "GET") and query.get("restype") == "container":
                self._fs(fs)
                return 200, b"", {"ETag": '"0x1"', "Last-Modified": formatdate(usegmt=True)}
            if method == "DELETE":
                self._fs(fs)
                del filesystems[fs]
                return 202, b"", {}
            if method == "GET" and query.get("resource") == "filesystem":
                return self._list(self._fs(fs), query)
            raise _Error(400, "UnsupportedOperation", f"stand-in: {method} {query} on a filesystem")

        files = self._fs(fs)
        if method == "HEAD":
            entry = self._file(files, path, blob_api=True)
            return 200, b"", {**self._props(entry), "Content-Length": len(entry.data)}
        if method == "GET":
            return self._download(self._file(files, path, blob_api=True))
        if method == "PUT":
            source = self.headers.get("x-ms-rename-source")
            if source:
                return self._rename(files, fs, path, source)
            kind = query.get("resource")
            if kind not in ("file", "directory"):
                raise _Error(400, "UnsupportedOperation", f"stand-in: PUT path with {query}")
            existing = files.get(path)
            if existing is not None and self.headers.get("If-None-Match") == "*":
                raise _Error(409, "PathAlreadyExists", f"{path} already exists")
            if existing is not None and existing.is_dir and kind == "directory":
                return 201, b"", {"ETag": existing.etag}
            self._make_parents(files, path)
            files[path] = _Path(is_dir=kind == "directory")
            return 201, b"", {"ETag": files[path].etag}
        if method == "PATCH":
            entry = self._file(files, path, blob_api=False)
            position = int(query.get("position", "-1"))
            if query.get("action") == "append":
                if position != len(entry.data) + len(entry.pending):
                    raise _Error(400, "InvalidAppendPosition", "append position mismatch")
                entry.pending += body
                return 202, b"", {}
            if query.get("action") == "flush":
                if position != len(entry.data) + len(entry.pending):
                    raise _Error(400, "InvalidFlushPosition", "flush position mismatch")
                entry.data += entry.pending
                entry.pending = bytearray()
                entry.touch()
                return 200, b"", {"ETag": entry.etag, "Last-Modified": formatdate(usegmt=True)}
            raise _Error(400, "UnsupportedOperation", f"stand-in: PATCH with {query}")
        if method == "DELETE":
            self._file(files, path, blob_api=False)
            doomed = [p for p in files if p == path or p.startswith(path + "/")]
            if len(doomed) > 1 and query.get("recursive") != "true":
                raise _Error(409, "DirectoryNotEmpty", f"{path} is not empty")
            for name in doomed:
                del files[name]
            return 200, b"", {}
        raise _Error(405, "UnsupportedHttpVerb", f"stand-in: {method}")

    def _download(self, entry: _Path):
        if entry.is_dir:
            return 200, b"", self._props(entry)
        size = len(entry.data)
        spec = self.headers.get("x-ms-range") or self.headers.get("Range")
        headers = self._props(entry)
        if not spec:
            return 200, bytes(entry.data), headers
        start_s, _, end_s = spec.removeprefix("bytes=").partition("-")
        start = int(start_s)
        end = min(int(end_s) if end_s else size - 1, size - 1)
        if start >= size:
            raise _Error(
                416, "InvalidRange", "range not satisfiable", {"Content-Range": f"bytes */{size}"}
            )
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, bytes(entry.data[start : end + 1]), headers

    def _rename(self, files, fs, path, source):
        source_path = unquote(source.split("?", 1)[0]).lstrip("/")
        source_fs, _, source_name = source_path.partition("/")
        source_files = self._fs(source_fs)
        entry = self._file(source_files, source_name.strip("/"), blob_api=False)
        if path in files and files[path].is_dir:
            raise _Error(409, "PathConflict", f"{path} is a directory")
        self._make_parents(files, path)
        del source_files[source_name.strip("/")]
        files[path] = entry
        entry.touch()
        return 201, b"", {"ETag": entry.etag}

    def _list(self, files, query):
        directory = (query.get("directory") or "").strip("/")
        if directory and (directory not in files or not files[directory].is_dir):
            raise _Error(404, "PathNotFound", f"directory {directory} not found")
        recursive = query.get("recursive") == "true"
        base = directory + "/" if directory else ""
        paths = []
        for name in sorted(files):
            rest = name[len(base) :]
            if not name.startswith(base) or not rest or (not recursive and "/" in rest):
                continue
            entry = files[name]
            item = {
                "name": name,
                "lastModified": formatdate(entry.modified, usegmt=True),
                "etag": entry.etag,
                "contentLength": 0 if entry.is_dir else len(entry.data),
            }
            if entry.is_dir:
                item["isDirectory"] = "true"
            paths.append(item)
        body = json.dumps({"paths": paths}).encode()
        return 200, body, {"Content-Type": "application/json;charset=utf-8"}
