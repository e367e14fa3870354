"""A small Hub-shaped HTTP server so the real `huggingface_hub` client and transformers can push and load offline.

It speaks just enough of the Hugging Face Hub protocol (as used by huggingface_hub 2.4) for `create_repo`,
`upload_file`, `upload_folder`, `create_commit`, `hf_hub_download`, `snapshot_download`, `model_info`,
`list_repo_files`, `list_repo_tree`, `get_paths_info`, `repo_exists`, `file_exists`, `list_repo_refs`,
`list_repo_commits`, `create_branch`, `delete_repo`, `ModelCard.push_to_hub` / `ModelCard.load` and transformers'
`from_pretrained`. Everything is kept in memory; stdlib only.

Design choices that mirror the real Hub (so client code paths are the production ones):

* every repo has a linear history per branch; a new repo starts with an "initial commit" holding `.gitattributes`;
* commit oids are 40-hex sha1 strings; revisions are branch names, `refs/pr/N` or full commit shas;
* file oids / ETags are git blob sha1s, so the client's "skip unchanged files" logic works;
* `preupload` always answers `uploadMode: regular`, so content travels base64 inside the NDJSON commit (no LFS/Xet);
* 404s carry `X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound` (+ `X-Repo-Commit` for missing
  entries, which lets the client cache the non-existence exactly as it does against huggingface.co).

A flaky Hub on demand: `hub.inject_fault("steering.safetensors", "cut", times=2)` makes the next 2 GETs of a file
misbehave ("5xx": an error status; "cut": the connection is reset mid-body; "short": the body ends, with an orderly
close, before its Content-Length; "bad_etag": same length, one byte flipped, so it no longer matches its ETag).
HEAD requests keep answering correct metadata unless the fault names "HEAD" in `methods`.

Usage in-process::

    with HubServer() as hub:
        HfApi(endpoint=hub.url).create_repo("user/tiny")

or as a script (prints the URL on the first stdout line, serves until killed)::

    python tests/hub_server.py --port 8765
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Segments that follow a repo id in /api/{type}s/{repo_id}/... URLs; used to tell "ns/name" from a bare "name".
_API_SUBPATHS = {"revision", "tree", "preupload", "commit", "paths-info", "refs", "commits", "branch"}
DEFAULT_NAMESPACE = "user"
DEFAULT_BRANCH = "main"
# Same spirit as the file the Hub seeds new repos with; kept short since nothing here reads it.
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LFS_REJECTED = (
    "lfsFile operations are not supported by this test Hub: files must travel inline (base64) in the commit. "
    "The preupload endpoint always answers uploadMode='regular'; an lfsFile line means the client skipped it."
)
_OID_COUNTER = itertools.count()


def git_blob_oid(data: bytes) -> str:
    """Return the git blob sha1 of `data` (what the Hub uses as oid and ETag of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now_iso() -> str:
    # The client's parse_datetime expects exactly '%Y-%m-%dT%H:%M:%S.%fZ'.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answered with the Hub's error headers and JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


FAULT_KINDS = ("5xx", "cut", "short", "bad_etag")


@dataclass
class Fault:
    """A misbehaviour of the next `times` /resolve requests for files whose path in the repo matches `pattern`."""

    pattern: str
    kind: str
    times: int = 1
    repo_id: str | None = None
    status: int = 503
    methods: tuple[str, ...] = ("GET",)
    fired: int = 0


@dataclass
class Commit:
    """One commit: a full snapshot of the tree (path -> blob oid)."""

    oid: str
    parent: str | None
    files: dict[str, str]
    title: str
    message: str
    date: str


@dataclass
class Repo:
    """A repo: commits by oid and refs (branches plus `refs/pr/N`) pointing at them."""

    repo_id: str
    repo_type: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    next_pr: int = 1


class HubStore:
    """In-memory repos and content-addressed blobs, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        """Return the repo or raise RepoNotFound."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> bool:
        """Create a repo with an initial commit; return False if it already existed."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private, created_at=_now_iso())
            self.repos[(repo_type, repo_id)] = repo
            self._new_commit(repo, DEFAULT_BRANCH, None, {".gitattributes": GITATTRIBUTES}, "initial commit", "")
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        """Delete a repo or raise RepoNotFound."""
        with self.lock:
            self.get_repo(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """Resolve a branch, PR ref or full commit sha to a commit, or raise RevisionNotFound."""
        oid = repo.refs.get(revision)
        if oid is None and len(revision) == 40 and revision in repo.commits:
            oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _new_commit(
        self, repo: Repo, ref: str, parent: Commit | None, adds: dict[str, bytes], title: str, message: str
    ) -> Commit:
        files = dict(parent.files) if parent else {}
        for path, data in adds.items():
            oid = git_blob_oid(data)
            self.blobs[oid] = data
            files[path] = oid
        return self._store_commit(repo, ref, parent, files, title, message)

    def _store_commit(
        self, repo: Repo, ref: str, parent: Commit | None, files: dict[str, str], title: str, message: str
    ) -> Commit:
        # The counter and clock make oids unique even for two identical commits in a row.
        seed = json.dumps(
            [
                repo.repo_type,
                repo.repo_id,
                parent.oid if parent else None,
                sorted(files.items()),
                title,
                message,
                next(_OID_COUNTER),
                time.time_ns(),
            ]
        )
        commit = Commit(
            hashlib.sha1(seed.encode()).hexdigest(), parent.oid if parent else None, files, title, message, _now_iso()
        )
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        return commit

    def commit(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        operations: list[tuple[str, str, bytes | None]],
        title: str,
        message: str = "",
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[Commit, int | None]:
        """Apply ("file"|"deletedFile"|"deletedFolder", path, data) operations as one commit on a branch."""
        with self.lock:
            repo = self.get_repo(repo_type, repo_id)
            if revision not in repo.refs:
                raise HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
            head = repo.commits[repo.refs[revision]]
            if parent_commit is not None and not create_pr and not head.oid.startswith(parent_commit):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            base = repo.commits[parent_commit] if create_pr and parent_commit in repo.commits else head
            files = dict(base.files)
            for kind, path, data in operations:
                if kind == "file":
                    assert data is not None
                    oid = git_blob_oid(data)
                    self.blobs[oid] = data
                    files[path] = oid
                elif kind == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif kind == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
            pr_num = None
            ref = revision
            if create_pr:
                pr_num = repo.next_pr
                repo.next_pr += 1
                ref = f"refs/pr/{pr_num}"
            return self._store_commit(repo, ref, base, files, title, message), pr_num


def _tree_entries(store: HubStore, commit: Commit) -> dict[str, dict[str, Any]]:
    """Return every file and directory of a commit as /tree entries keyed by path."""
    entries: dict[str, dict[str, Any]] = {}
    children: dict[str, list[str]] = {}
    for path, oid in commit.files.items():
        entries[path] = {"type": "file", "oid": oid, "size": len(store.blobs[oid]), "path": path}
        parts = path.split("/")
        for i in range(1, len(parts)):
            children.setdefault("/".join(parts[:i]), []).append(oid)
    for directory, oids in children.items():
        # A stable, content-derived id is all the client needs from a folder oid.
        tree_oid = hashlib.sha1("\n".join(sorted(oids)).encode()).hexdigest()
        entries[directory] = {"type": "directory", "oid": tree_oid, "size": 0, "path": directory}
    return entries


def _parse_front_matter(text: str) -> dict[str, Any] | None:
    """Return README YAML metadata as a dict when PyYAML happens to be importable, else None."""
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end == -1:
        return None
    try:
        import yaml  # optional: only enriches model_info().card_data
    except ImportError:
        return None
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class _Handler(BaseHTTPRequestHandler):
    """Routes Hub API and /resolve requests to the store."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.hub.verbose:
            sys.stderr.write(f"[hub] {self.address_string()} {format % args}\n")

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(obj).encode(), {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        )

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.hub.url.split('://', 1)[1]}"

    def _repo_url(self, repo: Repo) -> str:
        return f"{self._base_url()}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        hub._log_request(method, self.path)
        try:
            body = self._read_body()
            split = urlsplit(self.path)
            query = parse_qs(split.query)
            segments = [s for s in split.path.split("/") if s]
            if segments[:1] == ["api"]:
                self._route_api(method, segments[1:], query, body)
            else:
                self._route_resolve(method, segments)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            headers.update(err.headers)
            self._send_json(err.status, {"error": err.message}, headers)
        except (ValueError, KeyError, TypeError) as err:
            self._send_json(400, {"error": f"Bad request: {type(err).__name__}: {err}"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a server bug: answer 500 with the reason rather than dropping the connection
            traceback.print_exc()
            self._send_json(500, {"error": f"Test Hub server error: {type(err).__name__}: {err}"})

    # -- /api/... -------------------------------------------------------------------------------------------

    def _route_api(self, method: str, segments: list[str], query: dict[str, list[str]], body: bytes) -> None:
        store = self.server.hub.store
        if segments == ["repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if segments == ["repos", "delete"] and method == "DELETE":
            payload = json.loads(body or b"{}")
            repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
            store.delete_repo(payload.get("type") or "model", repo_id)
            return self._send_json(200, {})
        if segments == ["validate-yaml"] and method == "POST":
            return self._send_json(200, {"errors": [], "warnings": []})
        if segments == ["agent-harnesses"] and method == "GET":
            # Fetched by the client's agent detection on first use; an empty registry means "no agent".
            return self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if segments == ["whoami-v2"] and method == "GET":
            return self._send_json(
                200,
                {
                    "type": "user",
                    "name": DEFAULT_NAMESPACE,
                    "fullname": "Test User",
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
                },
            )
        if not segments or segments[0] not in _PLURAL_TO_TYPE or len(segments) < 2:
            raise HubError(404, f"Unknown API route: {method} /api/{'/'.join(segments)}")
        repo_type = _PLURAL_TO_TYPE[segments[0]]
        rest = segments[1:]
        # Repo ids are "ns/name" except canonical one-segment ids; prefer whichever exists.
        two = "/".join(unquote(s) for s in rest[:2])
        if len(rest) >= 2 and ((repo_type, two) in store.repos or rest[1] not in _API_SUBPATHS):
            repo_id, sub = two, rest[2:]
        else:
            repo_id, sub = unquote(rest[0]), rest[1:]
        with store.lock:
            repo = store.get_repo(repo_type, repo_id)
            action = sub[0] if sub else ""
            rev = unquote(sub[1]) if len(sub) > 1 else DEFAULT_BRANCH
            if method == "GET" and action == "":
                return self._repo_info(repo, store.resolve(repo, DEFAULT_BRANCH), query)
            if method == "GET" and action == "revision" and len(sub) == 2:
                return self._repo_info(repo, store.resolve(repo, rev), query)
            if method == "GET" and action == "tree" and len(sub) >= 2:
                path = "/".join(unquote(s) for s in sub[2:]).strip("/")
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._tree(store.resolve(repo, rev), path, recursive)
            if method == "POST" and action == "paths-info" and len(sub) == 2:
                form = parse_qs(body.decode())
                entries = _tree_entries(store, store.resolve(repo, rev))
                return self._send_json(200, [entries[p] for p in form.get("paths", []) if p in entries])
            if method == "POST" and action == "preupload" and len(sub) == 2:
                commit = store.resolve(repo, rev)
                files = json.loads(body)["files"]
                return self._send_json(
                    200,
                    {
                        "files": [
                            {
                                "path": f["path"],
                                "uploadMode": "regular",
                                "shouldIgnore": False,
                                "oid": commit.files.get(f["path"]),
                            }
                            for f in files
                        ],
                        "commitOid": commit.oid,
                    },
                )
            if method == "GET" and action == "refs":
                return self._refs(repo)
            if method == "GET" and action == "commits" and len(sub) == 2:
                return self._commits(repo, store.resolve(repo, rev))
            if action == "branch" and len(sub) == 2 and method in ("POST", "DELETE"):
                return self._branch(repo, method, rev, json.loads(body or b"{}"))
        if method == "POST" and action == "commit" and len(sub) == 2:
            return self._commit(repo_type, repo_id, rev, body, query)
        raise HubError(404, f"Unknown API route: {method} /api/{'/'.join(segments)}")

    def _create_repo(self, payload: dict[str, Any]) -> None:
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Unsupported repo type: {repo_type}")
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        store = self.server.hub.store
        created = store.create_repo(repo_type, repo_id, private=private)
        url = self._repo_url(store.get_repo(repo_type, repo_id))
        if not created:
            # create_repo(exist_ok=True) swallows 409 and then reads "url" from this very body.
            return self._send_json(409, {"error": f"You already created this {repo_type} repo", "url": url})
        return self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo: Repo, commit: Commit, query: dict[str, list[str]]) -> None:
        store = self.server.hub.store
        with_blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(store.blobs[commit.files[path]]), blobId=commit.files[path])
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        readme = commit.files.get("README.md")
        card = _parse_front_matter(store.blobs[readme].decode("utf-8", "replace")) if readme else None
        if card is not None:
            info["cardData"] = card
            if isinstance(card.get("tags"), list):
                info["tags"] = [str(t) for t in card["tags"]]
            for key in ("library_name", "pipeline_tag"):
                if key in card:
                    info[key] = card[key]
        self._send_json(200, info)

    def _tree(self, commit: Commit, path: str, recursive: bool) -> None:
        entries = _tree_entries(self.server.hub.store, commit)
        if path and entries.get(path, {}).get("type") != "directory":
            raise HubError(404, f"Directory not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        prefix = f"{path}/" if path else ""
        listing = [
            entry
            for p, entry in sorted(entries.items())
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        self._send_json(200, listing)

    def _refs(self, repo: Repo) -> None:
        def ref(name: str, full: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": repo.refs[full if full.startswith("refs/pr/") else name]}

        branches = [ref(n, f"refs/heads/{n}") for n in sorted(repo.refs) if not n.startswith("refs/pr/")]
        prs = [ref(n, n) for n in sorted(repo.refs) if n.startswith("refs/pr/")]
        self._send_json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": prs})

    def _commits(self, repo: Repo, commit: Commit | None) -> None:
        history = []
        while commit is not None:
            history.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": DEFAULT_NAMESPACE}],
                    "date": commit.date,
                }
            )
            commit = repo.commits[commit.parent] if commit.parent else None
        self._send_json(200, history)

    def _branch(self, repo: Repo, method: str, branch: str, payload: dict[str, Any]) -> None:
        store = self.server.hub.store
        if method == "DELETE":
            if branch not in repo.refs or branch == DEFAULT_BRANCH:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.refs[branch]
            return self._send_json(200, {})
        if branch in repo.refs:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.refs[branch] = store.resolve(repo, payload.get("startingPoint") or DEFAULT_BRANCH).oid
        return self._send_json(200, {})

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes, query: dict[str, list[str]]) -> None:
        header: dict[str, Any] | None = None
        operations: list[tuple[str, str, bytes | None]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                encoding = value.get("encoding", "base64")
                content = value["content"]
                data = base64.b64decode(content) if encoding == "base64" else content.encode()
                operations.append(("file", value["path"], data))
            elif key in ("deletedFile", "deletedFolder"):
                operations.append((key, value["path"], None))
            elif key == "lfsFile":
                raise HubError(400, LFS_REJECTED)
            else:
                raise HubError(400, f"Unsupported commit operation: {key!r}")
        if header is None:
            raise HubError(400, "Commit payload must start with a 'header' line")
        for _, path, _ in operations:
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"Invalid path in repo: {path!r}")
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        store = self.server.hub.store
        commit, pr_num = store.commit(
            repo_type,
            repo_id,
            revision,
            operations,
            header.get("summary") or "",
            header.get("description") or "",
            header.get("parentCommit"),
            create_pr,
        )
        repo_url = self._repo_url(store.get_repo(repo_type, repo_id))
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{repo_url}/commit/{commit.oid}",
                "pullRequestUrl": f"{repo_url}/discussions/{pr_num}" if pr_num is not None else None,
            },
        )

    # -- /{repo_id}/resolve/{rev}/{path} ----------------------------------------------------------------------

    def _route_resolve(self, method: str, segments: list[str]) -> None:
        if method not in ("GET", "HEAD"):
            raise HubError(405, f"Method {method} not allowed here")
        repo_type = "model"
        if segments and segments[0] in ("datasets", "spaces"):
            repo_type = _PLURAL_TO_TYPE[segments[0]]
            segments = segments[1:]
        try:
            i = next(i for i in (1, 2) if len(segments) > i + 1 and segments[i] == "resolve")
        except StopIteration:
            raise HubError(404, f"Not found: {self.path}") from None
        repo_id = "/".join(unquote(s) for s in segments[:i])
        revision = unquote(segments[i + 1])
        filename = "/".join(unquote(s) for s in segments[i + 2 :])
        store = self.server.hub.store
        with store.lock:
            repo = store.get_repo(repo_type, repo_id)
            commit = store.resolve(repo, revision)
            oid = commit.files.get(filename)
            if oid is None:
                # X-Repo-Commit on the 404 lets the client cache ".no_exist" for this commit, as with the real Hub.
                raise HubError(404, f"Entry not found: {filename}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
            data = store.blobs[oid]
        fault = self.server.hub._take_fault(method, f"{_URL_PREFIX[repo_type]}{repo_id}", filename)
        if fault is not None and fault.kind == "5xx":
            raise HubError(fault.status, "Injected fault")
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{oid}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
        }
        byte_range = self.headers.get("Range")
        if byte_range and method == "GET":
            start, end = self._parse_range(byte_range, len(data))
            if start is None:
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send_body(206, data[start : end + 1], headers, fault)
        self._send_body(200, data, headers, fault)

    def _send_body(self, status: int, body: bytes, headers: dict[str, str], fault: Fault | None) -> None:
        """Send a file's bytes, or misbehave as `fault` says (headers always promise the full, correct body)."""
        if fault is None or self.command == "HEAD":
            return self._send(status, body, headers)
        if fault.kind == "bad_etag":
            return self._send(status, body[:-1] + bytes([body[-1] ^ 0x01]) if body else body, headers)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        if fault.kind == "cut":  # linger 0: the close sends a TCP reset, as a dropped connection does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:  # "short": an orderly end of stream before Content-Length bytes came
            self.connection.shutdown(socket.SHUT_WR)

    @staticmethod
    def _parse_range(value: str, size: int) -> tuple[int | None, int]:
        """Parse a single `bytes=a-b` / `bytes=a-` / `bytes=-n` range; (None, 0) when unsatisfiable."""
        unit, _, spec = value.partition("=")
        if unit.strip().lower() != "bytes" or "," in spec:
            raise HubError(400, f"Unsupported Range header: {value!r}")
        first, _, last = spec.strip().partition("-")
        if first:
            start, end = int(first), int(last) if last else size - 1
        else:
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            return None, 0
        return start, min(end, size - 1)


class _HTTPServer(ThreadingHTTPServer):
    """Threading server that can drop its open keep-alive connections on stop."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: HubServer):
        self.hub = hub
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close every open client connection, so pooled keep-alive sockets see EOF instead of a live server."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
            self.open_sockets.clear()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class HubServer:
    """A Hub-shaped HTTP server on 127.0.0.1, served from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.host = host
        self.port = port
        self.verbose = verbose
        self.store = HubStore()
        self.faults: list[Fault] = []  # programmed with inject_fault; each request uses up one of the first match
        self.requests: list[tuple[str, str]] = []
        self._requests_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Bind (port 0 picks a free port) and serve in a daemon thread; return self."""
        if self._httpd is not None:
            raise RuntimeError("HubServer already started")
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"hub-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and drop open connections (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL to use as HF_ENDPOINT / HfApi(endpoint=...), without trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is currently accepting connections."""
        return self._httpd is not None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- direct access for tests (no HTTP) ---------------------------------------------------------------------

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> bool:
        """Create a repo directly; return False if it already existed."""
        return self.store.create_repo(repo_type, repo_id, private=private)

    def put_files(
        self,
        repo_id: str,
        files: dict[str, bytes | None],
        *,
        repo_type: str = "model",
        branch: str = DEFAULT_BRANCH,
        message: str | None = None,
    ) -> str:
        """Commit `files` directly (bytes to write, None to delete); creates the repo if needed; return the oid."""
        self.store.create_repo(repo_type, repo_id)
        operations: list[tuple[str, str, bytes | None]] = [
            ("file", path, data) if data is not None else ("deletedFile", path, None) for path, data in files.items()
        ]
        commit, _ = self.store.commit(repo_type, repo_id, branch, operations, message or f"Update {len(files)} file(s)")
        return commit.oid

    def put_file(
        self,
        repo_id: str,
        path: str,
        data: bytes,
        *,
        repo_type: str = "model",
        branch: str = DEFAULT_BRANCH,
        message: str | None = None,
    ) -> str:
        """Commit one file directly (e.g. to plant a truncated safetensors file); return the new commit oid."""
        return self.put_files(
            repo_id, {path: data}, repo_type=repo_type, branch=branch, message=message or f"Put {path}"
        )

    def get_file(self, repo_id: str, path: str, *, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> bytes:
        """Return a file's bytes at a revision (KeyError if absent)."""
        with self.store.lock:
            repo = self.store.get_repo(repo_type, repo_id)
            return self.store.blobs[self.store.resolve(repo, revision).files[path]]

    def list_files(self, repo_id: str, *, revision: str = DEFAULT_BRANCH, repo_type: str = "model") -> list[str]:
        """Return the sorted file paths at a revision."""
        with self.store.lock:
            repo = self.store.get_repo(repo_type, repo_id)
            return sorted(self.store.resolve(repo, revision).files)

    def commits(self, repo_id: str, *, branch: str = DEFAULT_BRANCH, repo_type: str = "model") -> list[str]:
        """Return the commit oids reachable from `branch`, oldest first."""
        with self.store.lock:
            repo = self.store.get_repo(repo_type, repo_id)
            oids: list[str] = []
            commit: Commit | None = self.store.resolve(repo, branch)
            while commit is not None:
                oids.append(commit.oid)
                commit = repo.commits[commit.parent] if commit.parent else None
            return oids[::-1]

    def head(self, repo_id: str, *, branch: str = DEFAULT_BRANCH, repo_type: str = "model") -> str:
        """Return the commit oid a branch points at."""
        return self.commits(repo_id, branch=branch, repo_type=repo_type)[-1]

    def inject_fault(
        self,
        pattern: str,
        kind: str,
        *,
        times: int = 1,
        repo_id: str | None = None,
        status: int = 503,
        methods: tuple[str, ...] = ("GET",),
    ) -> Fault:
        """Make the next `times` requests for matching files misbehave (see FAULT_KINDS); return the live Fault.

        `pattern` is an fnmatch pattern on the path in the repo ("steering.safetensors", "*.json"); `repo_id` limits
        it to one repo (datasets/spaces prefixed as in URLs); `status` is the answer of a "5xx" fault.
        """
        if kind not in FAULT_KINDS or (kind == "5xx" and not 500 <= status <= 599):
            raise ValueError(f"Bad fault {kind!r}/{status}: kinds are {FAULT_KINDS}; a 5xx status is in 500..599")
        fault = Fault(pattern, kind, times, repo_id, status, tuple(methods))
        with self._requests_lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, repo_id: str, path: str) -> Fault | None:
        with self._requests_lock:
            for fault in self.faults:
                if fault.times > 0 and method in fault.methods and fault.repo_id in (None, repo_id):
                    if fnmatchcase(path, fault.pattern):
                        fault.times, fault.fired = fault.times - 1, fault.fired + 1
                        return fault
        return None

    def _log_request(self, method: str, path: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path))

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._requests_lock:
            self.requests.clear()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print the base URL as the first stdout line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with HubServer(args.host, args.port, verbose=args.verbose) as hub:
        print(hub.url, flush=True)
        # Short waits keep the main thread responsive to signals.
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
