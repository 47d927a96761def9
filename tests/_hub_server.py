"""A small Hub-compatible HTTP server for tests: a stand-in for huggingface.co on 127.0.0.1.

This is NOT the Hugging Face Hub and not a mirror of it. It serves the few endpoints that
huggingface_hub 2.x calls to download a file and to push a folder of small files, as read from
huggingface_hub 2.4.0 (``file_download.py``, ``_commit_api.py``, ``_upload_pipeline.py``,
``hf_api.create_repo``), so that pgl-zoo's download and push code can run unpatched over real HTTP:

* ``HEAD`` / ``GET /{org}/{name}/resolve/{revision}/{filename}``: ``X-Repo-Commit`` (the commit the
  revision resolves to), ``ETag`` and ``X-Linked-Etag`` (the file's sha256, as the Hub gives for
  LFS files), ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges: bytes``,
  ``Content-Disposition``; a ``Range: bytes=N-`` request is answered ``206`` with ``Content-Range``.
  Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
* ``GET /api/agent-harnesses``: an empty registry. huggingface_hub >= 1.x fetches it (at most once a
  day, cached in ``HF_HOME``) to name AI agents in its user-agent header, before its first request.
* ``POST /api/repos/create`` (409 when the repository exists, as on the Hub).
* ``POST /api/validate-yaml``: the YAML front matter of a README.md being uploaded must parse to a
  mapping (the Hub checks more: license ids, tags).
* ``POST /api/models/{org}/{name}/preupload/{revision}``: every file is answered
  ``uploadMode: "regular"`` (content inlined in the commit, base64), never LFS or Xet. The Hub itself
  sends ``*.safetensors`` through LFS/Xet storage; that path is not modelled here.
* ``POST /api/models/{org}/{name}/commit/{revision}``: the ndjson commit (``header``, ``file``,
  ``deletedFile``); answers ``commitOid`` and ``commitUrl``.

Write endpoints need ``Authorization: Bearer <token>`` with the server's token (401 otherwise).
Unlike the Hub, creating a repository makes an empty first commit (no ``.gitattributes``).

Storage, one folder per repository: ``ROOT/{org}/{name}/refs/{branch}`` holds a commit id and
``ROOT/{org}/{name}/commits/{commit}/`` the full tree of files at that commit.

For tests: ``requests`` records every request (method, path, Range and Authorization headers);
``unhandled`` the requests that matched no endpoint above; ``cut_once[filename] = n`` makes the next
full ``GET`` of that file send its headers and only ``n`` bytes of the body, then close the
connection; ``corrupt`` holds file names whose ``GET`` body has one byte changed (same size, the
headers still name the true sha256), as a corrupted transfer or mirror would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
API_REPO_RE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit)/(?P<revision>[^/]+)$")
RANGE_RE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubState:
    root: Path
    token: str
    requests: list[Request] = field(default_factory=list)
    unhandled: list[Request] = field(default_factory=list)
    cut_once: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- repositories on disk ---------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def resolve_revision(self, repo_id: str, revision: str) -> str | None:
        """The commit a branch name or commit id stands for; None if there is none."""
        repo = self.repo_dir(repo_id)
        if COMMIT_RE.match(revision) and (repo / "commits" / revision).is_dir():
            return revision
        ref = repo / "refs" / revision
        if "/" not in revision and ref.is_file():
            return ref.read_text().strip()
        return None

    def create_repo(self, repo_id: str) -> bool:
        """A repository with one empty commit on ``main``; False if it exists already."""
        repo = self.repo_dir(repo_id)
        with self.lock:
            if repo.exists():
                return False
            commit = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
            (repo / "commits" / commit).mkdir(parents=True)
            (repo / "refs").mkdir()
            (repo / "refs" / "main").write_text(commit)
        return True

    def add_commit(self, repo_id: str, branch: str, files: dict[str, bytes], deleted: list[str],
                   summary: str) -> str | None:
        """Apply a commit to ``branch``: copy the parent's tree, write ``files``, remove ``deleted``."""
        repo = self.repo_dir(repo_id)
        with self.lock:
            parent = self.resolve_revision(repo_id, branch)
            if parent is None or COMMIT_RE.match(branch):
                return None
            digest = hashlib.sha1(parent.encode() + summary.encode())
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
            for path in sorted(deleted):
                digest.update(b"-" + path.encode())
            commit = digest.hexdigest()
            tree = repo / "commits" / commit
            if not tree.exists():
                staging = repo / "commits" / f".{commit}.tmp"
                shutil.copytree(repo / "commits" / parent, staging)
                for path in deleted:
                    (staging / path).unlink(missing_ok=True)
                for path, content in files.items():
                    target = staging / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                staging.rename(tree)
            (repo / "refs" / branch).write_text(commit)
        return commit

    def add_files(self, repo_id: str, files: dict[str, bytes], summary: str = "add files") -> str:
        """Create ``repo_id`` if needed and commit ``files`` on main; returns the commit id."""
        self.create_repo(repo_id)
        commit = self.add_commit(repo_id, "main", files, [], summary)
        assert commit is not None
        return commit

    def tree(self, repo_id: str, revision: str) -> dict[str, bytes]:
        """Every file of ``repo_id`` at ``revision``, by path."""
        commit = self.resolve_revision(repo_id, revision)
        assert commit is not None, f"{repo_id}@{revision}: no such revision"
        base = self.repo_dir(repo_id) / "commits" / commit
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file's content (what the Hub reports for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the tests read ``requests`` instead

    # -- helpers ---------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def _record(self) -> Request:
        request = Request(self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization"))
        with self.state.lock:
            self.state.requests.append(request)
        return request

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._json(status, {"error": message}, extra)

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.state.token}":
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    def _unhandled(self, request: Request) -> None:
        with self.state.lock:
            self.state.unhandled.append(request)
        self._error(404, None, f"this test server has no endpoint for {request.method} {request.path}")

    # -- methods ---------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._resolve(self._record())

    def do_GET(self) -> None:  # noqa: N802
        self._resolve(self._record())

    def do_POST(self) -> None:  # noqa: N802
        request = self._record()
        path = urlsplit(self.path).path
        body = self._read_body()
        if path == "/api/repos/create":
            if self._authorised():
                self._create_repo(json.loads(body or b"{}"))
            return
        if path == "/api/validate-yaml":
            self._validate_yaml(json.loads(body or b"{}").get("content", ""))
            return
        match = API_REPO_RE.match(path)
        if match is None:
            self._unhandled(request)
            return
        if not self._authorised():
            return
        repo_id, revision = unquote(match["repo"]), unquote(match["revision"])
        if not self.state.repo_dir(repo_id).is_dir():
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        elif self.state.resolve_revision(repo_id, revision) is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        elif match["action"] == "preupload":
            self._preupload(repo_id, revision, json.loads(body))
        else:
            self._commit(repo_id, revision, body)

    # -- endpoints -------------------------------------------------------------------------
    def _resolve(self, request: Request) -> None:
        if self.command == "GET" and urlsplit(self.path).path == "/api/agent-harnesses":
            self._json(200, {"standardEnvVars": [], "harnesses": {}})
            return
        match = RESOLVE_RE.match(urlsplit(self.path).path)
        if match is None:
            self._unhandled(request)
            return
        repo_id, revision, filename = match["repo"], unquote(match["revision"]), unquote(match["filename"])
        if not self.state.repo_dir(repo_id).is_dir():
            self._error(401, "RepoNotFound", "Repository not found")  # the Hub answers 401 here too
            return
        commit = self.state.resolve_revision(repo_id, revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        path = self.state.repo_dir(repo_id) / "commits" / commit / filename
        if ".." in Path(filename).parts or not path.is_file():
            self._error(404, "EntryNotFound", f"{filename} does not exist at {commit}", {"X-Repo-Commit": commit})
            return
        content = path.read_bytes()
        sha256 = hashlib.sha256(content).hexdigest()
        size = len(content)
        name = Path(filename).name
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{sha256}"',
            "X-Linked-Etag": f'"{sha256}"',
            "X-Linked-Size": str(size),
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{name}; filename=\"{name}\";",
        }
        if self.command == "HEAD":
            self._send(200, content, headers, "application/octet-stream")
            return
        if name in self.state.corrupt:
            body = bytearray(content)
            body[size // 2] ^= 0xFF
            content = bytes(body)
        start, end = 0, size - 1
        wanted = self.headers.get("Range")
        if wanted:
            parsed = RANGE_RE.match(wanted.strip())
            if parsed is None or int(parsed["start"]) >= size:
                self._error(416, None, f"unsatisfiable range {wanted}", {"Content-Range": f"bytes */{size}"})
                return
            start = int(parsed["start"])
            end = min(int(parsed["end"]) if parsed["end"] else size - 1, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        with self.state.lock:
            cut = None if wanted else self.state.cut_once.pop(name, None)
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if cut is not None:  # the promised length, but only ``cut`` bytes, then the connection drops
            self.wfile.write(content[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(content[start:end + 1])

    def _create_repo(self, payload: dict) -> None:
        if payload.get("type", "model") != "model":
            self._error(400, None, "this test server holds model repositories only")
            return
        repo_id = f"{payload.get('organization')}/{payload.get('name')}"
        if not self.state.create_repo(repo_id):
            self._error(409, None, "You already created this model repo")
            return
        base = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        self._json(200, {"url": f"{base}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self, readme: str) -> None:
        import yaml  # a dependency of huggingface_hub

        front = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
        try:
            ok = front is None or isinstance(yaml.safe_load(front.group(1)), dict)
        except yaml.YAMLError:
            ok = False
        if ok:
            self._json(200, {"warnings": []})
        else:
            self._json(400, {"errors": [{"message": "README.md metadata is not a YAML mapping"}]})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        current = self.state.tree(repo_id, revision)
        files = []
        for item in payload.get("files", []):
            existing = current.get(item["path"])
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_oid(existing) if existing is not None else None})
        self._json(200, {"files": files, "commitOid": self.state.resolve_revision(repo_id, revision)})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        summary, files, deleted = "", {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                self._error(400, None, f"this test server does not accept commit operation {key!r}")
                return
        commit = self.state.add_commit(repo_id, revision, files, deleted, summary)
        if commit is None:
            self._error(400, None, f"cannot commit to {revision}: not a branch")
            return
        base = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        self._json(200, {"commitUrl": f"{base}/{repo_id}/commit/{commit}", "commitOid": commit,
                         "pullRequestUrl": None})


class HubServer(ThreadingHTTPServer):
    """The server, on 127.0.0.1 and a free port; ``url`` is what HF_ENDPOINT should be set to."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, token: str = "hf_test_token") -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = HubState(Path(root), token)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket: later connections are refused."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()
