"""Downloads that never leave a corrupt final file.

Bytes go to ``<dest>.part``; an interrupted HTTP(S) transfer resumes from the bytes already there
with a ``Range`` request (automatically a few times, and again on the next run); the complete file
is hashed, checked by the caller (e.g. read as weights only) and only then renamed to ``dest``. A
sha256 mismatch or a refused file deletes the ``.part`` and says so. Google Drive links go through
``gdown``, which handles Drive's confirmation pages and quotas. Every failure is one-line
``DownloadError`` (HTTP status, unreachable host, disk full, interrupted transfer), and a failed
download removes the folders it created, unless a partial file kept for resuming is inside.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

from ..errors import DownloadError, SoloMixMaskError

CHUNK = 1 << 20
USER_AGENT = "solo-mixmask-zoo"
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def is_google_drive(url: str) -> bool:
    return url.startswith("gdrive:") or urllib.parse.urlsplit(url).hostname in DRIVE_HOSTS


def drive_file_id(url: str) -> str:
    """The file id of ``gdrive:ID``, ``.../file/d/ID/...`` or ``...?id=ID``."""
    if url.startswith("gdrive:"):
        return url[len("gdrive:"):]
    m = re.search(r"/file/d/([\w-]+)", url)
    if m:
        return m.group(1)
    ids = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("id")
    if ids:
        return ids[0]
    raise DownloadError(f"cannot find a Google Drive file id in {url}")


def fetch(url: str, dest: str | os.PathLike, sha256: Optional[str] = None, *,
          check: Optional[Callable[[Path], Any]] = None, progress: bool = True, retries: int = 3,
          timeout: float = 60.0) -> tuple[Path, str]:
    """Downloads ``url`` to ``dest``; returns the path and its sha256.

    ``sha256``: the expected hash (lowercase hex) or ``None`` (unverified: the hash is returned for
    the caller to report or pin). ``check(part)`` runs on the complete, hash-verified ``.part``
    before the rename; if it raises, the ``.part`` is deleted and the error is re-raised.
    """
    dest = Path(dest)
    created = make_folder(dest.parent)
    try:
        return _fetch(url, dest, sha256, check, progress, retries, timeout)
    except BaseException:
        remove_empty(created)
        raise


def make_folder(folder: Path) -> list[Path]:
    """Creates ``folder`` and its missing parents; returns those it created, deepest first."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_empty(created)
        raise DownloadError(f"cannot create the download folder {folder}: "
                            f"{exc.strerror or exc}") from None
    return created


def remove_empty(created: list[Path]) -> None:
    """Removes the folders a failed download created, deepest first, while they are empty (a
    partial file kept for resuming keeps its folder)."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def _fetch(url: str, dest: Path, sha256: Optional[str], check: Optional[Callable[[Path], Any]],
           progress: bool, retries: int, timeout: float) -> tuple[Path, str]:
    part = part_path(dest)
    if is_google_drive(url):
        _gdrive(url, part, progress)
    else:
        _http(url, part, progress, retries, timeout)
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise DownloadError(f"sha256 mismatch for {dest.name}: expected {sha256}, got {digest}; "
                            "deleted the download")
    if check is not None:
        try:
            check(part)
        except SoloMixMaskError as exc:
            part.unlink(missing_ok=True)
            raise type(exc)(f"{exc}; deleted the download") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    return dest, digest


# ------------------------------------------------------------------------------------ HTTP(S)

def _http(url: str, part: Path, progress: bool, retries: int, timeout: float) -> None:
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                              timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                return  # nothing left to fetch: the hash check decides whether the part is good
            raise DownloadError(f"download failed: HTTP {exc.code} {exc.reason} for {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"cannot reach {url}: {reason}") from None
        with response:
            start, total = _span(response, have)
            try:
                _receive(response, part, start, total, progress)
                return
            except (http.client.IncompleteRead, ConnectionError, socket.timeout,
                    TimeoutError) as exc:
                attempt += 1
                if attempt > retries:
                    kept = part.stat().st_size if part.exists() else 0
                    raise DownloadError(
                        f"transfer of {url} interrupted after {attempt} attempts "
                        f"({type(exc).__name__}); {kept} bytes kept in {part}, rerun to resume"
                    ) from None
                print(f"transfer interrupted ({type(exc).__name__}); resuming", file=sys.stderr)


def _span(response: http.client.HTTPResponse, have: int) -> tuple[int, Optional[int]]:
    """Where the body starts in the file and the file's total size (if the server says)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == have:
            return have, int(m.group(3)) if m.group(3) != "*" else None
        raise DownloadError(f"server answered the resume at byte {have} with "
                            f"{response.headers.get('Content-Range')!r}")
    # 200: the whole file (the server ignored the Range header, or there was none)
    return 0, int(length) if length is not None else None


def _receive(response: BinaryIO, part: Path, start: int, total: Optional[int],
             progress: bool) -> None:
    if total is not None:
        _check_space(part, total - start)
    bar = _progress_bar(total, start, part.name[:-len(".part")], progress)
    written = start
    try:
        with open(part, "r+b" if start else "wb", buffering=0) as f:
            if start:
                f.seek(start)
                f.truncate()
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                _write(f, chunk, part)
                written += len(chunk)
                bar.update(len(chunk))
    finally:
        bar.close()
    if total is not None and written < total:
        raise http.client.IncompleteRead(b"", total - written)


def _write(f: BinaryIO, chunk: bytes, part: Path) -> None:
    view = memoryview(chunk)
    while view:
        try:
            n = f.write(view)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DownloadError(f"disk full while writing {part}: free some space and rerun "
                                    "to resume (the partial file is kept)") from None
            raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
        view = view[n or 0:]


def _check_space(part: Path, needed: int) -> None:
    free = shutil.disk_usage(part.parent).free
    if needed > free:
        raise DownloadError(f"not enough disk space in {part.parent}: the download needs "
                            f"{_size(needed)}, {_size(free)} free")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: Optional[int], initial: int, name: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, dynamic_ncols=True)


# ------------------------------------------------------------------------------- Google Drive

def _gdrive(url: str, part: Path, progress: bool) -> None:
    """Drive serves large files behind a confirmation page and quotas: ``gdown`` knows them. It
    resumes its own partial file and publishes ``part``, which is then verified like any download."""
    import gdown

    file_id = drive_file_id(url)
    try:
        out = gdown.download(id=file_id, output=str(part), quiet=not progress, resume=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while writing {part}: free some space and rerun "
                                "to resume") from None
        raise DownloadError(f"Google Drive download of {file_id} failed: {exc}") from None
    except Exception as exc:  # gdown's own errors: permissions, quota, unreachable
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()),
                     type(exc).__name__)
        raise DownloadError(f"Google Drive download of {file_id} failed: {first}") from None
    if out is None or not part.is_file():
        raise DownloadError(f"Google Drive download of {file_id} failed (is the file shared "
                            "publicly, or is its download quota exhausted?)")
