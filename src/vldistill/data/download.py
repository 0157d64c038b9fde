"""Public files fetched safely, archives unpacked safely, gated data checked where users put it.

- :func:`fetch` downloads into ``<name>.part`` next to the destination, resumes an interrupted
  transfer with an HTTP Range request, retries transient failures with exponential back-off,
  verifies the sha256 and only then renames the file into place: a file under its final name is
  always complete and verified, and a bad download never replaces an existing copy.
- :func:`extract` unpacks zip and tar (any compression tarfile reads) into a temporary sibling
  directory and renames it into place when complete; members that would land outside the
  directory are refused before anything is written.
- :func:`check_placed` checks data whose licence forbids redistribution (Flickr30K images, VCR)
  and says exactly where it is expected and where to request it; the pipeline never fetches it.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from vldistill.io import file_sha256

log = logging.getLogger("vldistill.download")

CHUNK = 1 << 20
PROGRESS_EVERY_S = 10.0
MAX_RETRY_AFTER_S = 300.0
USER_AGENT = "vldistill-fetch/1"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


class DownloadError(OSError):
    """A file could not be downloaded (a permanent HTTP error, or retries exhausted)."""


class ChecksumError(ValueError):
    """A downloaded file's sha256 is not the one the config expects."""


class ExtractError(ValueError):
    """An archive could not be extracted (unknown format, unreadable)."""


class UnsafeArchiveError(ExtractError):
    """An archive member would be written outside the extraction directory."""


class MissingDataError(FileNotFoundError):
    """Gated data the user must place by hand is absent or incomplete."""


class _Transient(Exception):
    """A failure worth retrying; ``progressed`` says whether bytes arrived before it."""

    def __init__(self, message: str, progressed: bool = False, wait_s: float | None = None):
        super().__init__(message)
        self.progressed = progressed
        self.wait_s = wait_s


# ---------------------------------------------------------------------------------------------
# Download


def fetch(url: str, dest: str | Path, sha256: str | None, *, retries: int = 5,
          backoff_s: float = 1.0, timeout_s: float = 60, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    ``retries`` counts consecutive attempts that received nothing: an attempt that got some
    bytes before failing resumes from them and restarts the count, so a long transfer over a
    flaky link finishes while a dead server is given up on after ``retries`` retries.
    """
    expected = _require_sha256(sha256, url)
    dest = Path(dest)
    if dest.is_file():
        actual = file_sha256(dest)
        if actual == expected:
            log.info("%s is present and verified (sha256 %s); nothing to download", dest, actual)
            return dest
        # kept until a verified replacement exists: a failed download must not cost a copy
        log.warning("%s exists but its sha256 is %s, not %s; downloading a replacement",
                    dest, actual, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    failures = 0
    while True:
        try:
            _transfer(url, part, timeout_s, progress)
            break
        except _Transient as exc:
            failures = 0 if exc.progressed else failures + 1
            if failures > retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"could not download {url}: {exc} ({failures} consecutive attempts got "
                    f"nothing). {kept} bytes are kept in {part}; running again resumes from "
                    "them. Check the network, or whether the server is down or the URL moved."
                ) from None
            delay = backoff_s * 2 ** max(failures - 1, 0)
            if exc.wait_s is not None:  # the server said when to come back (Retry-After)
                delay = max(delay, min(exc.wait_s, MAX_RETRY_AFTER_S))
            log.warning("%s: %s; retrying in %.1f s (%d of %d retries without progress)",
                        url, exc, delay, failures, retries)
            time.sleep(delay)

    actual = file_sha256(part)
    if actual != expected:
        size = part.stat().st_size
        part.unlink()
        kept = f" The existing {dest} was left untouched." if dest.exists() else ""
        raise ChecksumError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {actual} "
            f"({size} bytes). The download was deleted.{kept} Running again downloads it from "
            "scratch; if the mismatch persists the file at that URL changed: check the source "
            "and update the sha256 in the config only if the new file is the one you want."
        )
    with open(part, "rb+") as handle:  # on disk before the rename makes it visible
        os.fsync(handle.fileno())
    os.replace(part, dest)
    log.info("%s verified (sha256 %s)", dest, actual)
    return dest


def _require_sha256(sha256: str | None, url: str) -> str:
    if not sha256:
        raise ValueError(f"no sha256 given for {url}: every downloaded file must be verified; "
                         "add its sha256 (64 hex digits, e.g. from `sha256sum FILE`) to the config")
    if not _SHA256.match(sha256):
        raise ValueError(f"sha256 for {url} must be 64 hex digits, got {sha256!r}")
    return sha256.lower()


def _transfer(url: str, part: Path, timeout_s: float, progress: bool) -> None:
    """One attempt: continue ``part`` from its current size to the end of the remote file."""
    offset = before = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",  # the checksum is of the file's bytes, not an encoding
    })
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        with exc:
            _http_error(exc, url, part, offset)
        return  # the part is complete (416); verification decides whether it is right
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"connection failed: {_reason(exc)}") from None

    with response:
        status = response.status or 200  # file:// URLs have no status: a plain full read
        total = _int_or_none(response.headers.get("Content-Length"))
        if status == 206 and offset:
            start, full = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                # not the bytes asked for: the part cannot be continued safely
                part.unlink()
                raise _Transient(f"server answered a range from byte {start} instead of "
                                 f"{offset}; restarting from zero")
            total = full if full is not None else (offset + total if total is not None else None)
            mode = "ab"
            log.info("%s: resuming at byte %d", url, offset)
        elif status == 200:
            if offset:
                log.info("%s: the server ignored the Range request; restarting from zero", url)
            offset, mode = 0, "wb"
        else:
            raise _Transient(f"unexpected HTTP status {status}")
        _copy_body(response, part, mode, offset, before, total, url, progress)


def _http_error(exc: urllib.error.HTTPError, url: str, part: Path, offset: int) -> None:
    if exc.code == 416 and offset:
        match = _UNSATISFIED_RANGE.match(exc.headers.get("Content-Range") or "")
        if match is None or int(match.group(1)) == offset:
            log.info("%s: the %d bytes in %s are the whole file", url, offset, part)
            return
        part.unlink()  # larger than the remote file: not a prefix of it
        raise _Transient(f"partial file ({offset} bytes) is larger than the remote file "
                         f"({match.group(1)} bytes); restarting from zero")
    if exc.code == 429 or 500 <= exc.code < 600:
        raise _Transient(f"HTTP {exc.code} {exc.reason}",
                         wait_s=_retry_after(exc.headers.get("Retry-After")))
    raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}; check the URL "
                        "(and whether the file needs a login or a licence agreement)")


def _copy_body(response: http.client.HTTPResponse, part: Path, mode: str, offset: int,
               before: int, total: int | None, url: str, progress: bool) -> None:
    """Write the body to ``part`` from ``offset``; progress means ``part`` outgrew ``before``
    (a server that ignores Range and always breaks off at the same byte makes none)."""
    received = offset
    started = last = time.monotonic()
    with open(part, mode) as handle:
        try:
            while block := response.read(CHUNK):
                handle.write(block)
                received += len(block)
                now = time.monotonic()
                if progress and now - last >= PROGRESS_EVERY_S:
                    last = now
                    _log_progress(url, received, total, received - offset, now - started)
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"transfer broke off after {received} bytes: {_reason(exc)}",
                             progressed=received > before) from None
    if total is not None and received < total:
        # http.client returns b"" when the peer closes early; only the length tells
        raise _Transient(f"transfer broke off after {received} of {total} bytes",
                         progressed=received > before)
    if progress:
        _log_progress(url, received, total, received - offset, time.monotonic() - started)


def _log_progress(url: str, received: int, total: int | None, new: int, seconds: float) -> None:
    rate = new / max(seconds, 1e-9) / 1e6
    share = f" ({100 * received / total:.1f}% of {total / 1e6:.1f} MB)" if total else ""
    log.info("%s: %.1f MB%s at %.2f MB/s", url, received / 1e6, share, rate)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.match(header or "")
    if match is None:
        return None, None
    full = match.group(3)
    return int(match.group(1)), (None if full == "*" else int(full))


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    if header.strip().isdigit():
        return float(header)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(header)
        return max(0.0, when.timestamp() - time.time())
    return None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason  # type: ignore[assignment]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Extraction


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a zip or tar archive into ``dest_dir``, all or nothing; return ``dest_dir``.

    The format is read from the file's content, not its name. An existing ``dest_dir`` is
    replaced only after the new tree is complete.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir.with_name(f".{dest_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():  # left by an earlier run of this process id that was killed
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        kind = _archive_kind(archive)
        if kind == "zip":
            with zipfile.ZipFile(archive) as zipped:
                _check_zip(zipped, archive)
                zipped.extractall(tmp)
        elif kind == "tar":
            with tarfile.open(archive, "r:*") as tarred:
                members = tarred.getmembers()
                _check_tar(members, archive)
                # the standard library's own safety filter as a second line of defence
                tarred.extractall(tmp, members=members, filter="data")
        else:
            raise ExtractError(f"{archive} is neither a zip nor a tar archive (plain, gz, bz2 "
                               "or xz); set extract: false for this download")
        _replace_dir(tmp, dest_dir)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ExtractError(f"could not extract {archive} as a {kind} archive: {exc}; it is "
                           "damaged (delete it so that it is downloaded and verified again) "
                           "or not an archive (then set extract: false)") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    n = sum(1 for p in dest_dir.rglob("*") if p.is_file())
    log.info("extracted %s into %s (%d files)", archive, dest_dir, n)
    return dest_dir


# gzip, bzip2, xz: compressed, and here taken for a compressed tar
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _archive_kind(path: Path) -> str | None:
    """'zip', 'tar' or None, from the file's first bytes (a name can be wrong)."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head.startswith(_COMPRESSED) or tarfile.is_tarfile(path):
        return "tar"
    return None


def _replace_dir(new: Path, dest_dir: Path) -> None:
    if not dest_dir.exists():
        os.replace(new, dest_dir)
        return
    old = dest_dir.with_name(f".{dest_dir.name}.old-{os.getpid()}")
    os.replace(dest_dir, old)
    os.replace(new, dest_dir)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def _unsafe_name(name: str) -> str | None:
    """Why a member name must not be extracted, or None if it stays inside the directory."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "contains '..'"
    return None


def _escapes(member_name: str, target: str) -> bool:
    """Whether a link at ``member_name`` pointing to ``target`` resolves outside the root."""
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        return True
    depth = 0
    for part in (*PurePosixPath(member_name).parent.parts, *PurePosixPath(target).parts):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _refuse(archive: Path, member: str, why: str) -> None:
    raise UnsafeArchiveError(f"refusing to extract {archive}: member {member!r} {why}, so it "
                             "would be written outside the target directory; nothing was "
                             "extracted. Check where this archive came from.")


def _check_zip(zipped: zipfile.ZipFile, archive: Path) -> None:
    for info in zipped.infolist():
        why = _unsafe_name(info.filename)
        if why:
            _refuse(archive, info.filename, why)
        if stat.S_ISLNK(info.external_attr >> 16):
            target = zipped.read(info).decode("utf-8", "replace")
            if _escapes(info.filename, target):
                _refuse(archive, info.filename, f"is a link to {target!r}")


def _check_tar(members: Sequence[tarfile.TarInfo], archive: Path) -> None:
    for member in members:
        why = _unsafe_name(member.name)
        if why:
            _refuse(archive, member.name, why)
        if member.issym() and _escapes(member.name, member.linkname):
            _refuse(archive, member.name, f"is a link to {member.linkname!r}")
        # hard link targets are archive member names, relative to the root
        if member.islnk() and (_unsafe_name(member.linkname) or _escapes("", member.linkname)):
            _refuse(archive, member.name, f"is a hard link to {member.linkname!r}")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            _refuse(archive, member.name, "is a device or fifo")


# ---------------------------------------------------------------------------------------------
# Gated data placed by hand


def check_placed(path: str | Path, what: str, request_url: str,
                 expect: Sequence[str] | int = 1) -> dict[str, object]:
    """Check data the user placed by hand; return ``{"path", "files", "bytes"}``.

    ``expect`` is either the minimum number of files (a single non-empty file counts as one) or
    the names, relative to ``path``, that must exist (then ``path`` must be a directory).
    Raise :class:`MissingDataError` saying where it belongs and where to request it.
    """
    path = Path(path).expanduser().absolute()
    names = [expect] if isinstance(expect, str) else expect
    problem: str | None = None
    files = size = 0
    if not path.exists():
        problem = "nothing is there" + (" (a broken symlink)" if path.is_symlink() else "")
    elif path.is_file():
        files, size = 1, path.stat().st_size
        if size == 0:
            problem = "the file is empty"
        elif not isinstance(names, int) or names > 1:
            problem = "it is a file, but a directory is expected"
    else:
        for root, _, filenames in os.walk(path, followlinks=True):
            for filename in filenames:
                with contextlib.suppress(OSError):  # a dangling link is not a placed file
                    size += os.stat(os.path.join(root, filename)).st_size
                    files += 1
        if isinstance(names, int):
            if files == 0:
                problem = "the directory is empty"
            elif files < names:
                problem = f"the directory holds {files} files, at least {names} are expected"
        else:
            missing = [n for n in names if not (path / n).exists()]
            if missing:
                shown = ", ".join(missing[:10])
                more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
                problem = f"{len(missing)} expected entries are missing: {shown}{more}"
    if problem:
        raise MissingDataError(
            f"{what} must be placed by hand at\n  {path}\nbut {problem}. The pipeline never "
            f"downloads this data (its licence requires each user to request it): request "
            f"access at {request_url}, then put the data at the path above (a symlink to an "
            "existing copy works) and run again."
        )
    log.info("%s found at %s: %d files, %d bytes", what, path, files, size)
    return {"path": str(path), "files": files, "bytes": size}
