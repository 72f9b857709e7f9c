"""A local stand-in for the Hugging Face Hub API that records every request (tests only).

Answers the endpoints ``huggingface_hub`` uses for ``create_repo``, ``create_branch`` and ``upload_folder``
(regular, non-LFS uploads):

| request | answer |
| --- | --- |
| ``POST /api/repos/create`` | 200 ``{"url"}`` (409 when the repo exists, like the Hub) |
| ``POST /api/validate-yaml`` | 200, or 400 when the README front matter is not a YAML mapping |
| ``POST /api/{type}s/{repo}/preupload/{rev}`` | every file ``"regular"`` (no LFS / Xet) |
| ``POST /api/{type}s/{repo}/commit/{rev}`` | parses the NDJSON body; 200 ``{"commitUrl", "commitOid"}`` |
| ``POST /api/{type}s/{repo}/branch/{name}`` | 200 |
| anything else | 404 (still recorded) |

Usage::

    with HubRecorder() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "dummy", ...}
        ...  # run the client in a subprocess
        hub.commits[0]["files"]["README.md"]  # bytes
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO_PATH = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+|[^/]+)/(?P<op>preupload|commit|branch)/(?P<rev>.+)$")


def front_matter(readme: str) -> Optional[dict]:
    """The YAML front matter of a README as a dict (``None`` when there is none)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, flags=re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_RecordingServer"

    def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
        return

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        body = self._read_body()
        recorder = self.server.recorder
        with recorder.lock:
            recorder.requests.append(
                {
                    "method": self.command,
                    "path": path,
                    "query": parse_qs(url.query),
                    "headers": {key.lower(): value for key, value in self.headers.items()},
                    "body": body,
                }
            )
        status, payload = recorder.respond(self.command, path, body)
        self._answer(status, payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, recorder: "HubRecorder"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.recorder = recorder


class HubRecorder:
    """Threaded HTTP server on ``127.0.0.1`` (random port) that fakes and records the Hub API.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``, the value for ``HF_ENDPOINT``.
        requests: every request as ``{"method", "path", "query", "headers" (lower-case names), "body"}``.
        repos: ``{repo_id: {"type", "visibility"}}`` created so far.
        commits: ``[{"repo_id", "revision", "header", "files": {path: bytes}, "operations": [...]}]``.
        branches: ``[(repo_id, branch)]`` created so far.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.branches: list[tuple[str, str]] = []
        self._server = _RecordingServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HubRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def respond(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """The ``(status, json)`` answer to one request."""
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        match = _REPO_PATH.match(path)
        if method == "POST" and match:
            repo_id, operation, revision = match["repo"], match["op"], match["rev"]
            if repo_id not in self.repos:
                return 404, {"error": f"Repository {repo_id} not found"}
            if operation == "preupload":
                files = json.loads(body)["files"]
                return 200, {
                    "files": [
                        {"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                        for entry in files
                    ]
                }
            if operation == "commit":
                return self._commit(repo_id, revision, body)
            if operation == "branch":
                with self.lock:
                    self.branches.append((repo_id, revision))
                return 200, {}
        return 404, {"error": f"hub_recorder does not answer {method} {path}"}

    def _create_repo(self, payload: dict) -> tuple[int, dict]:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        with self.lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
            self.repos[repo_id] = {"type": payload.get("type") or "model", "visibility": payload.get("visibility")}
        return 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id}

    @staticmethod
    def _validate_yaml(payload: dict) -> tuple[int, dict]:
        try:
            metadata = front_matter(payload["content"])
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}]}
        if metadata is not None and not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}]}
        return 200, {"errors": [], "warnings": []}

    def _commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, dict]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = {}
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                if value.get("encoding") != "base64":
                    return 400, {"error": f"unexpected encoding for {value['path']}"}
                files[value["path"]] = base64.b64decode(value["content"])
        oid = hashlib.sha1(body).hexdigest()
        with self.lock:
            self.commits.append(
                {"repo_id": repo_id, "revision": revision, "header": header, "files": files, "operations": lines}
            )
        return 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}
