"""volsam.weights.download against a local HTTP server on 127.0.0.1 started by the tests."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from volsam.weights import download as weights

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # about 1 MB, not a multiple of the chunk size


class WeightsServer(http.server.ThreadingHTTPServer):
    """Serves ``payload`` at any path, with switches for the failures under test."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = PAYLOAD
        self.honour_range = True
        self.drop_after: int | None = None  # close the connection after this many body bytes
        self.status_override: int | None = None
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights/model.pt"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        server: WeightsServer = self.server
        server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if server.status_override:
            self.send_error(server.status_override)
            return
        body, status = server.payload, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, status = body[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drop_after is not None:
            self.wfile.write(body[:server.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = WeightsServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(weights.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def entry_for(server, sha256: str | None = hashlib.sha256(PAYLOAD).hexdigest()) -> weights.WeightsFile:
    return weights.WeightsFile("test", "model.pt", server.url, sha256, len(PAYLOAD), "Apache-2.0",
                               "https://www.apache.org/licenses/LICENSE-2.0", "test weights", "tests")


def test_download_verifies_caches_and_reports_progress(server, cache):
    seen = []
    result = weights.download(entry_for(server), progress=lambda done, total: seen.append((done, total)))
    assert result.path == cache / "model.pt" and result.path.read_bytes() == PAYLOAD
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and not result.recorded_now
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not (cache / "model.pt.part").exists()
    # Cached and verified: no second request.
    assert weights.download(entry_for(server)).path == result.path
    assert len(server.requests) == 1


def test_checksum_mismatch_deletes_the_file_and_says_so(server, cache):
    server.payload = PAYLOAD[:-1] + b"X"
    with pytest.raises(weights.ChecksumError, match="model.pt arrived damaged.*expected .*deleted, try again"):
        weights.download(entry_for(server))
    assert not any(cache.iterdir()) or list(cache.iterdir()) == [cache / weights.RECORDS_FILE]


def test_interrupted_download_resumes_with_a_range_request(server, cache):
    server.drop_after = 300_000
    with pytest.raises(weights.DownloadError, match="stopped after 0.3 MB of 1.0 MB; try again to resume"):
        weights.download(entry_for(server))
    partial = cache / "model.pt.part"
    assert partial.stat().st_size == 300_000

    server.drop_after = None
    result = weights.download(entry_for(server))

    assert server.requests[-1]["range"] == "bytes=300000-"
    assert result.path.read_bytes() == PAYLOAD and not partial.exists()


def test_a_server_that_ignores_ranges_makes_the_download_start_over(server, cache):
    (cache).mkdir(parents=True)
    (cache / "model.pt.part").write_bytes(b"garbage that is not the start of the file")
    server.honour_range = False
    result = weights.download(entry_for(server))
    assert result.path.read_bytes() == PAYLOAD


def test_a_complete_partial_file_is_verified_without_downloading_again(server, cache):
    cache.mkdir(parents=True)
    (cache / "model.pt.part").write_bytes(PAYLOAD)  # e.g. Slicer closed before the rename
    result = weights.download(entry_for(server))
    assert result.path.read_bytes() == PAYLOAD
    assert server.requests == [{"path": "/weights/model.pt", "range": f"bytes={len(PAYLOAD)}-"}]


def test_offline_is_a_clear_error(cache):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entry = weights.WeightsFile("x", "model.pt", f"http://127.0.0.1:{port}/model.pt", None, 1, "Apache-2.0", "",
                                "", "tests")
    with pytest.raises(weights.OfflineError, match=rf"cannot reach 127.0.0.1:{port} to download model.pt.*"
                                                   r"check the network connection or proxy"):
        weights.download(entry, timeout_s=5)


def test_missing_file_on_the_server_is_reported(server, cache):
    server.status_override = 404
    with pytest.raises(weights.DownloadError, match="answered HTTP 404"):
        weights.download(entry_for(server))


def test_cancel_keeps_the_partial_file_for_later(server, cache):
    cancel = threading.Event()

    def progress(done, total):
        if done:
            cancel.set()

    with pytest.raises(weights.DownloadCancelled, match="resumes where it stopped"):
        weights.download(entry_for(server), progress=progress, cancel=cancel)
    assert (cache / "model.pt.part").stat().st_size > 0
    assert weights.download(entry_for(server)).path.read_bytes() == PAYLOAD


def test_unpublished_hash_is_recorded_on_first_download_and_enforced_later(server, cache):
    entry = entry_for(server, sha256=None)
    first = weights.download(entry)
    assert first.recorded_now
    record = json.loads((cache / weights.RECORDS_FILE).read_text())["model.pt"]
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["size"] == len(PAYLOAD)
    assert weights.verified_file(entry) is not None

    first.path.write_bytes(PAYLOAD[::-1])  # changed on disk
    assert weights.verified_file(entry) is None
    server.payload = PAYLOAD[::-1]  # and the server now serves something else
    with pytest.raises(weights.ChecksumError, match="expected " + record["sha256"]):
        weights.download(entry)


def test_cache_folder_is_per_user_and_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "mine"))
    assert weights.cache_dir() == tmp_path / "mine" / "weights"
    monkeypatch.delenv(weights.CACHE_ENVIRONMENT_VARIABLE)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(weights.sys, "platform", "linux")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert weights.cache_dir() == tmp_path / ".cache" / "volsam" / "weights"
    monkeypatch.setattr(weights.sys, "platform", "darwin")
    assert weights.cache_dir() == tmp_path / "Library" / "Caches" / "volsam" / "weights"
    monkeypatch.setattr(weights.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert weights.cache_dir() == tmp_path / "Local" / "volsam" / "Cache" / "weights"


def test_catalog_entries_are_complete():
    for key, entry in weights.CATALOG.items():
        assert entry.key == key and entry.url.startswith("https://dl.fbaipublicfiles.com/")
        assert entry.url.endswith("/" + entry.filename) and entry.licence == "Apache-2.0"
        if entry.filename.startswith("sam2.1_"):
            assert entry.sha256 is None  # not published: recorded on first download
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert weights.CATALOG["sam-vit-b"].used_by == "SAMAdapt3D"
    assert "never downloads" in weights.SAM3D_ADAPTER_RELEASE_NOTICE
    assert not any("3dsam" in entry.url.lower() or "onedrive" in entry.url.lower()
                   for entry in weights.CATALOG.values())


def test_a_wrong_file_under_the_final_name_is_replaced(server, cache):
    cache.mkdir(parents=True)
    (cache / "model.pt").write_bytes(b"not the model")
    assert weights.download(replace(entry_for(server))).path.read_bytes() == PAYLOAD
