"""Downloadable model weights: a catalog, a per-user cache, resumable downloads checked by SHA256.

Only the Python standard library is used (``urllib``), so this works inside Slicer's Python
before anything is installed. Nothing is downloaded unless a caller asks, and the Slicer
modules ask only after the user agreed to the file's licence (:attr:`WeightsFile.licence`).

* The cache is per user: ``$VOLSAM_CACHE_DIR`` if set, else the platform's cache folder
  (``%LOCALAPPDATA%\\volsam\\Cache`` on Windows, ``~/Library/Caches/volsam`` on macOS,
  ``$XDG_CACHE_HOME/volsam`` or ``~/.cache/volsam`` elsewhere), sub-folder ``weights``.
  Never the extension's install tree, which may be read-only and is replaced on updates.
* Downloads go to ``<name>.part`` and are resumed with an HTTP ``Range`` request when a
  partial file is there; the finished file is checked against its SHA256 before it is moved
  to its final name, so a final name always holds a verified file.
* Files without a published hash (SAM 2.1) get their hash and size *recorded* on the first
  download (``recorded-hashes.json`` in the cache) and checked against that record later.
* The released 3DSAM-adapter weights have no licence and no checksums: they are not in the
  catalog; :data:`SAM3D_ADAPTER_RELEASE_NOTICE` says where users get them, and users pick the
  file themselves.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE_ENVIRONMENT_VARIABLE = "VOLSAM_CACHE_DIR"
RECORDS_FILE = "recorded-hashes.json"
PARTIAL_SUFFIX = ".part"
_CHUNK_BYTES = 1 << 20

APACHE_2 = ("Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0")
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
SAM2_1_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

SAM3D_ADAPTER_RELEASE_NOTICE = (
    "The 3DSAM-adapter authors share one checkpoint per dataset (kits, lits, pancreas, colon) through a "
    "OneDrive folder linked from https://github.com/med-air/3DSAM-adapter. No licence and no checksums "
    "are published for them, so VolumetricSAM never downloads or redistributes them: download the file "
    "for your dataset yourself, read the authors' terms, and pick the file here.")


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable file. ``sha256`` None: not published (recorded on first download)."""

    key: str
    filename: str
    url: str
    sha256: str | None
    approximate_bytes: int
    licence: str
    licence_url: str
    description: str
    used_by: str

    @property
    def size_text(self) -> str:
        return _megabytes(self.approximate_bytes)


def _sam(key, name, sha256, size_mb, what, used_by) -> WeightsFile:
    return WeightsFile(key, name, SAM_URL + name, sha256, size_mb * 1_000_000, *APACHE_2, what, used_by)


def _sam2(key, base, name, sha256, size_mb, what) -> WeightsFile:
    return WeightsFile(key, name, base + name, sha256, size_mb * 1_000_000, *APACHE_2, what, "SAM2Volume")


#: Every file the extension may download, by key. Hashes from the publishers (see the project's
#: weights notes); SAM 2.1 publishes none.
CATALOG: dict[str, WeightsFile] = {entry.key: entry for entry in (
    _sam("sam-vit-b", "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
         375, "SAM ViT-B (Meta): the frozen image encoder of 3DSAM-adapter", "SAMAdapt3D"),
    _sam("sam-vit-l", "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
         1250, "SAM ViT-L (Meta); does not fit 3DSAM-adapter, listed for inspection", "none"),
    _sam("sam-vit-h", "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
         2560, "SAM ViT-H (Meta); does not fit 3DSAM-adapter, listed for inspection", "none"),
    _sam2("sam2.1-tiny", SAM2_1_URL, "sam2.1_hiera_tiny.pt", None, 149, "SAM 2.1 Hiera tiny (Meta)"),
    _sam2("sam2.1-small", SAM2_1_URL, "sam2.1_hiera_small.pt", None, 176, "SAM 2.1 Hiera small (Meta)"),
    _sam2("sam2.1-base-plus", SAM2_1_URL, "sam2.1_hiera_base_plus.pt", None, 309, "SAM 2.1 Hiera base+ (Meta)"),
    _sam2("sam2.1-large", SAM2_1_URL, "sam2.1_hiera_large.pt", None, 857, "SAM 2.1 Hiera large (Meta)"),
    _sam2("sam2-tiny", SAM2_URL, "sam2_hiera_tiny.pt",
          "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125", 149, "SAM 2 Hiera tiny (Meta)"),
    _sam2("sam2-small", SAM2_URL, "sam2_hiera_small.pt",
          "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3", 176, "SAM 2 Hiera small (Meta)"),
    _sam2("sam2-base-plus", SAM2_URL, "sam2_hiera_base_plus.pt",
          "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071", 309, "SAM 2 Hiera base+ (Meta)"),
    _sam2("sam2-large", SAM2_URL, "sam2_hiera_large.pt",
          "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b", 857, "SAM 2 Hiera large (Meta)"),
)}


class WeightsNeeded(Exception):
    """A catalog file must be downloaded (after the user agrees to its licence) before the model
    can be built; ``reason`` says what it is needed for."""

    def __init__(self, entry: WeightsFile, reason: str):
        super().__init__(f"{entry.filename} is needed: {reason}")
        self.entry = entry
        self.reason = reason


class DownloadError(RuntimeError):
    """A download failed; the message says why and what to do."""


class OfflineError(DownloadError):
    """The server could not be reached (no network, proxy, firewall)."""


class ChecksumError(DownloadError):
    """A file's SHA256 is not the expected one."""


class DownloadCancelled(DownloadError):
    """The caller cancelled; the partial file is kept, and the next download resumes it."""


@dataclass(frozen=True)
class DownloadResult:
    """A verified file. ``recorded_now``: its hash was recorded by this download (no published
    hash), which the user should be shown."""

    path: Path
    sha256: str
    size_bytes: int
    recorded_now: bool = False


ProgressCallback = Callable[[int, "int | None"], None]


# --- where ------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The per-user folder that holds downloaded weights (created on first use)."""
    override = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if override:
        base = Path(override).expanduser()
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "volsam" / "Cache"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "volsam"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "volsam"
    return base / "weights"


def cached_path(entry: WeightsFile, directory: Path | None = None) -> Path:
    return Path(directory or cache_dir()) / entry.filename


def _megabytes(count: int | None) -> str:
    if count is None:
        return "unknown size"
    return f"{count / 1e6:.1f} MB" if count < 10_000_000 else f"{count / 1e6:.0f} MB"


# --- hash records -----------------------------------------------------------------------------
def _records_path(directory: Path) -> Path:
    return directory / RECORDS_FILE


def _read_records(directory: Path) -> dict:
    path = _records_path(directory)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged record file only costs a re-hash


def _write_record(directory: Path, filename: str, record: dict) -> None:
    records = _read_records(directory)
    records[filename] = record
    temporary = _records_path(directory).with_suffix(".json.tmp")
    temporary.write_text(json.dumps(records, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, _records_path(directory))


def recorded_hash(entry: WeightsFile, directory: Path | None = None) -> dict | None:
    """The hash and size recorded for ``entry`` (first download), or None."""
    return _read_records(Path(directory or cache_dir())).get(entry.filename)


def expected_hash(entry: WeightsFile, directory: Path | None = None) -> str | None:
    """The published hash, else the one recorded on the first download, else None."""
    if entry.sha256:
        return entry.sha256
    record = recorded_hash(entry, directory)
    return record.get("sha256") if record else None


def sha256_of(path: Path, cancel: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("cancelled while checking the file")
            digest.update(chunk)
    return digest.hexdigest()


# --- checking a cached file -------------------------------------------------------------------
def verified_file(entry: WeightsFile, directory: Path | None = None) -> DownloadResult | None:
    """The cached file if it is there and its SHA256 is the expected one, else None.

    The file is re-hashed only when its size or modification time differs from the last
    verification (hashing a 1 GB file takes seconds).
    """
    directory = Path(directory or cache_dir())
    path = cached_path(entry, directory)
    if not path.is_file():
        return None
    expected = expected_hash(entry, directory)
    record = recorded_hash(entry, directory) or {}
    stat = path.stat()
    if (expected and record.get("sha256") == expected and record.get("size") == stat.st_size
            and record.get("verified_mtime_ns") == stat.st_mtime_ns):
        return DownloadResult(path, expected, stat.st_size)
    actual = sha256_of(path)
    if expected and actual != expected:
        return None
    _write_record(directory, entry.filename, {**record, "sha256": actual, "size": stat.st_size,
                                              "verified_mtime_ns": stat.st_mtime_ns, "url": entry.url})
    return DownloadResult(path, actual, stat.st_size, recorded_now=expected is None)


# --- downloading ------------------------------------------------------------------------------
def download(entry: WeightsFile, directory: Path | None = None, progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None, timeout_s: float = 30.0) -> DownloadResult:
    """Download ``entry`` into the cache (resuming a partial file) and verify it.

    ``progress(bytes_done, bytes_total_or_None)`` is called as data arrives; setting ``cancel``
    stops the download with :class:`DownloadCancelled` and keeps the partial file. Raises
    :class:`OfflineError` when the server cannot be reached and :class:`ChecksumError` when the
    finished file's SHA256 is wrong (the bad file is deleted so the next try starts afresh).
    """
    directory = Path(directory or cache_dir())
    directory.mkdir(parents=True, exist_ok=True)
    existing = verified_file(entry, directory)
    if existing is not None:
        return existing
    target = cached_path(entry, directory)
    if target.exists():
        target.unlink()  # present but wrong: never keep an unverified file under the final name
    partial = target.with_name(target.name + PARTIAL_SUFFIX)

    digest = hashlib.sha256()
    done = partial.stat().st_size if partial.is_file() else 0
    response = _open(entry, done, timeout_s)
    try:
        if done and response.status == 200:  # the server ignored the range: start over
            done = 0
        total = _total_size(response, done)
        if done and response.status == 416:  # the partial file is already complete
            total = done
        mode = "ab" if done else "wb"
        if done:
            with open(partial, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
                    digest.update(chunk)
        if progress is not None:
            progress(done, total)
        if response.status != 416:
            with open(partial, mode) as handle:
                done = _copy(response, handle, digest, done, total, progress, cancel, entry)
    finally:
        response.close()
    if total is not None and done < total:
        raise DownloadError(f"the download of {entry.filename} stopped after {_megabytes(done)} of "
                            f"{_megabytes(total)}; try again to resume it")
    return _finish(entry, directory, partial, target, digest.hexdigest(), done)


def _open(entry: WeightsFile, offset: int, timeout_s: float):
    request = urllib.request.Request(entry.url, headers={"User-Agent": "VolumetricSAM weights downloader"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            return error  # an HTTPError is a response too: "range not satisfiable" = already complete
        raise DownloadError(f"{entry.url} answered HTTP {error.code} ({error.reason}); "
                            "the file may have moved: check for an update of VolumetricSAM") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        host = urllib.request.urlparse(entry.url).netloc
        raise OfflineError(f"cannot reach {host} to download {entry.filename} ({reason}); check the network "
                           f"connection or proxy, or download {entry.url} with a browser and pick the file "
                           "yourself") from None


def _total_size(response, done: int) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return None
    return done + int(length) if response.status == 206 else int(length)


def _copy(response, handle, digest, done: int, total: int | None, progress, cancel, entry) -> int:
    last_report = 0.0
    while True:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"download of {entry.filename} cancelled after {_megabytes(done)}; "
                                    "it resumes where it stopped next time")
        try:
            chunk = response.read(_CHUNK_BYTES)
        except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as error:
            raise DownloadError(f"the connection broke after {_megabytes(done)} of {entry.filename} ({error}); "
                                "try again to resume it") from None
        if not chunk:
            return done
        handle.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        now = time.monotonic()
        if progress is not None and (now - last_report > 0.1 or (total is not None and done >= total)):
            progress(done, total)
            last_report = now


def _finish(entry: WeightsFile, directory: Path, partial: Path, target: Path, actual: str,
            size: int) -> DownloadResult:
    expected = expected_hash(entry, directory)
    if expected and actual != expected:
        partial.unlink(missing_ok=True)
        raise ChecksumError(f"{entry.filename} arrived damaged or changed on the server: SHA256 {actual}, "
                            f"expected {expected}; the file was deleted, try again")
    os.replace(partial, target)
    stat = target.stat()
    record = recorded_hash(entry, directory) or {}
    if expected is None:
        record.update(recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write_record(directory, entry.filename, {**record, "sha256": actual, "size": size, "url": entry.url,
                                              "verified_mtime_ns": stat.st_mtime_ns})
    return DownloadResult(target, actual, size, recorded_now=expected is None)
