"""Downloads (resume, retry, verify, atomic), safe extraction and the gated-data check, against a
local HTTP server run in a thread: offline, seeded, seconds."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import random
import re
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, snakemake

from vldistill.config import ConfigError, check_config, load_schema
from vldistill.data.download import (
    ChecksumError,
    DownloadError,
    ExtractError,
    MissingDataError,
    UnsafeArchiveError,
    check_placed,
    extract,
    fetch,
)

PAYLOAD = random.Random(0).randbytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"backoff_s": 0.01, "timeout_s": 5}


@dataclass
class Served:
    """One file on the test server and how the server misbehaves for it."""

    data: bytes
    cut_after: int | None = None  # close the connection after this many body bytes ...
    cuts: int = 0  # ... on this many requests
    failures: int = 0  # answer 503 to this many requests first
    down_after: int | None = None  # answer 503 to every request after this many
    ignore_range: bool = False  # always answer 200 with the whole file
    misrange: int = 0  # answer this many Range requests with 206 from byte 0 (a broken server)
    stall_s: float = 0.0  # wait this long before answering ...
    stalls: int = 0  # ... on this many requests
    ranges: list[str | None] = field(default_factory=list)  # each request's Range header


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        served = self.server.files.get(self.path.lstrip("/"))
        self.server.paths.append(self.path)
        if served is None:
            self.send_error(404)
            return
        served.ranges.append(self.headers.get("Range"))
        if served.stalls:
            served.stalls -= 1
            time.sleep(served.stall_s)
        down = served.down_after is not None and len(served.ranges) > served.down_after
        if served.failures or down:
            served.failures = max(served.failures - 1, 0)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, start = served.data, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not served.ignore_range:
            start = int(match.group(1))
            if served.misrange:
                served.misrange -= 1
                start = 0
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if served.cuts and served.cut_after is not None:
            served.cuts -= 1
            body = body[: served.cut_after]  # then the connection closes: a truncated body
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, Served] = {}
        self.paths: list[str] = []

    def add(self, name: str, data: bytes = PAYLOAD, **behaviour: object) -> str:
        self.files[name] = Served(data, **behaviour)  # type: ignore[arg-type]
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that timed out and hung up is part of the test, not a server error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture()
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# --- fetch --------------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_leaves_no_part(server, tmp_path):
    url = server.add("a.bin")
    dest = fetch(url, tmp_path / "raw" / "a.bin", DIGEST, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "raw" / "a.bin.part").exists()
    assert server.files["a.bin"].ranges == [None]


def test_a_verified_file_already_in_place_makes_no_request(server, tmp_path):
    url = server.add("a.bin")
    dest = tmp_path / "a.bin"
    dest.write_bytes(PAYLOAD)
    assert fetch(url, dest, DIGEST.upper(), **FAST) == dest
    assert server.paths == []


def test_a_bad_checksum_fails_naming_url_and_digests_and_leaves_nothing(server, tmp_path):
    url = server.add("a.bin")
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        fetch(url, tmp_path / "a.bin", wrong, **FAST)
    message = str(info.value)
    assert url in message and wrong in message and DIGEST in message
    assert "Running again downloads it from scratch" in message
    assert list(tmp_path.iterdir()) == []


def test_a_bad_download_never_replaces_an_existing_copy(server, tmp_path):
    old = b"an older release of the file"
    dest = tmp_path / "a.bin"
    dest.write_bytes(old)
    url = server.add("a.bin", data=PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))  # corrupted
    with pytest.raises(ChecksumError, match="left untouched"):
        fetch(url, dest, DIGEST, **FAST)
    assert dest.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    # a good download does replace it, once verified
    server.files["a.bin"].data = PAYLOAD
    fetch(url, dest, DIGEST, **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path, caplog):
    url = server.add("a.bin", cut_after=100_000, cuts=1)
    caplog.set_level("INFO", logger="vldistill.download")
    dest = fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.files["a.bin"].ranges == [None, "bytes=100000-"]
    assert "resuming at byte 100000" in caplog.text


def test_a_part_left_by_an_earlier_run_is_resumed(server, tmp_path):
    url = server.add("a.bin")
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:123_456])
    fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.files["a.bin"].ranges == ["bytes=123456-"]


def test_a_complete_part_answered_416_goes_straight_to_verification(server, tmp_path):
    url = server.add("a.bin")
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.files["a.bin"].ranges == [f"bytes={len(PAYLOAD)}-"]


def test_a_part_longer_than_the_file_is_discarded(server, tmp_path):
    url = server.add("a.bin")
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD + b"stale tail")
    fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.files["a.bin"].ranges == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_a_server_that_ignores_range_restarts_cleanly_from_zero(server, tmp_path):
    url = server.add("a.bin", ignore_range=True, cut_after=100_000, cuts=1)
    dest = fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert dest.read_bytes() == PAYLOAD  # not 100 kB of prefix followed by the whole file
    assert server.files["a.bin"].ranges == [None, "bytes=100000-"]


def test_a_206_for_the_wrong_bytes_discards_the_part_and_restarts(server, tmp_path):
    url = server.add("a.bin", misrange=1)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.files["a.bin"].ranges == ["bytes=1000-", None]


def test_503_is_retried_with_backoff_until_it_succeeds(server, tmp_path):
    url = server.add("a.bin", failures=3)
    start = time.perf_counter()
    fetch(url, tmp_path / "a.bin", DIGEST, retries=3, backoff_s=0.05, timeout_s=5)
    assert time.perf_counter() - start >= 0.05 + 0.1 + 0.2  # doubling delays
    assert len(server.files["a.bin"].ranges) == 4
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_retries_are_given_up_with_a_clear_error(server, tmp_path):
    url = server.add("a.bin", failures=100)
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "a.bin", DIGEST, retries=2, **FAST)
    assert len(server.files["a.bin"].ranges) == 3  # the first try and 2 retries
    message = str(info.value)
    assert url in message and "HTTP 503" in message and "running again resumes" in message
    assert not (tmp_path / "a.bin").exists()


def test_what_was_received_before_giving_up_is_kept_for_the_next_run(server, tmp_path):
    # the first attempt gets 50 kB, then the server is down for good
    url = server.add("a.bin", cut_after=50_000, cuts=1, down_after=1)
    with pytest.raises(DownloadError, match="50000 bytes are kept"):
        fetch(url, tmp_path / "a.bin", DIGEST, retries=1, **FAST)
    assert (tmp_path / "a.bin.part").read_bytes() == PAYLOAD[:50_000]
    assert not (tmp_path / "a.bin").exists()
    server.files["a.bin"].down_after = None  # back up: the next run resumes and verifies
    fetch(url, tmp_path / "a.bin", DIGEST, **FAST)
    assert server.files["a.bin"].ranges == [None, "bytes=50000-", "bytes=50000-",
                                            "bytes=50000-"]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_a_server_that_never_honours_range_and_always_breaks_off_is_given_up_on(server, tmp_path):
    url = server.add("a.bin", ignore_range=True, cut_after=100_000, cuts=100)
    with pytest.raises(DownloadError, match="broke off after 100000 of 300000 bytes"):
        fetch(url, tmp_path / "a.bin", DIGEST, retries=2, **FAST)
    assert len(server.files["a.bin"].ranges) == 4  # progress once, then 3 without


def test_a_timeout_is_retried(server, tmp_path):
    url = server.add("a.bin", stall_s=1.0, stalls=1)
    fetch(url, tmp_path / "a.bin", DIGEST, retries=2, backoff_s=0.01, timeout_s=0.3)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert len(server.files["a.bin"].ranges) == 2


def test_a_missing_file_fails_at_once_without_retrying(server, tmp_path):
    url = server.add("a.bin").replace("a.bin", "gone.bin")
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(url, tmp_path / "gone.bin", DIGEST, retries=5, backoff_s=10)
    assert server.paths == ["/gone.bin"]


@pytest.mark.parametrize("sha256", [None, "", "abc", "g" * 64])
def test_a_missing_or_malformed_checksum_is_refused_before_any_request(server, tmp_path, sha256):
    url = server.add("a.bin")
    with pytest.raises(ValueError, match="sha256"):
        fetch(url, tmp_path / "a.bin", sha256, **FAST)
    assert server.paths == []


# --- extract ------------------------------------------------------------------------------------

FILES = {"images/1.jpg": b"one", "images/sub/2.jpg": b"two", "captions.json": b"{}"}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tarred:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tarred.addfile(info)
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("make,name", [(make_zip, "data.zip"), (make_tar, "data.tgz"),
                                       (make_tar, "named-wrongly.bin")])
def test_extract_unpacks_zip_and_tar_gz_into_place(tmp_path, make, name):
    archive = make(tmp_path / name, FILES)
    out = extract(archive, tmp_path / "out" / "data.d")
    assert tree(out) == FILES
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.d"]  # no temporaries


def test_extract_replaces_an_older_tree_only_when_complete(tmp_path):
    out = tmp_path / "data.d"
    out.mkdir()
    (out / "stale.txt").write_text("from an older archive")
    extract(make_zip(tmp_path / "data.zip", FILES), out)
    assert tree(out) == FILES
    with pytest.raises(ExtractError, match="damaged"):
        extract(_truncated(make_tar(tmp_path / "new.tgz", FILES)), out)
    assert tree(out) == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.d", "data.zip", "new.tgz"]


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("files,links,why", [
    ({"../evil.txt": b"x"}, None, "contains '..'"),
    ({"ok/../../evil.txt": b"x"}, None, "contains '..'"),
    ({"/tmp/evil.txt": b"x"}, None, "absolute path"),
    ({"ok.txt": b"x"}, {"escape": "../../etc"}, "is a link to '../../etc'"),
    ({"ok.txt": b"x"}, {"sub/abs": "/etc/passwd"}, "is a link to '/etc/passwd'"),
])
def test_tar_members_escaping_the_directory_are_refused_and_nothing_written(
        tmp_path, files, links, why):
    archive = make_tar(tmp_path / "evil.tgz", {**FILES, **files}, links)
    with pytest.raises(UnsafeArchiveError, match=re.escape(why)):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz"]


def test_a_link_that_stays_inside_is_extracted(tmp_path):
    archive = make_tar(tmp_path / "ok.tgz", FILES, {"images/latest.jpg": "sub/2.jpg"})
    out = extract(archive, tmp_path / "out")
    assert (out / "images/latest.jpg").read_bytes() == b"two"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a\\..\\..\\evil.txt"])
def test_zip_members_escaping_the_directory_are_refused(tmp_path, name):
    archive = make_zip(tmp_path / "evil.zip", {**FILES, name: b"x"})
    with pytest.raises(UnsafeArchiveError, match="outside the target directory"):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    plain = tmp_path / "captions.json"
    plain.write_text("{}")
    with pytest.raises(ExtractError, match="neither a zip nor a tar"):
        extract(plain, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- check_placed -------------------------------------------------------------------------------

REQUEST = "https://example.org/request-access"


def test_missing_gated_data_names_the_exact_path_and_where_to_request_it(tmp_path):
    where = tmp_path / "flickr30k" / "images"
    with pytest.raises(MissingDataError) as info:
        check_placed(where, "Flickr30K images", REQUEST)
    message = str(info.value)
    assert str(where.absolute()) in message and REQUEST in message
    assert "nothing is there" in message and "never downloads" in message
    assert isinstance(info.value, OSError)


def test_relative_paths_are_reported_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match=re.escape(str(tmp_path / "vcr" / "images"))):
        check_placed("vcr/images", "VCR images", REQUEST)


def test_empty_or_incomplete_gated_data_is_refused(tmp_path):
    where = tmp_path / "images"
    where.mkdir()
    with pytest.raises(MissingDataError, match="the directory is empty"):
        check_placed(where, "Flickr30K images", REQUEST)
    for i in range(3):
        (where / f"{i}.jpg").write_bytes(b"jpg")
    with pytest.raises(MissingDataError, match="holds 3 files, at least 5 are expected"):
        check_placed(where, "Flickr30K images", REQUEST, expect=5)
    with pytest.raises(MissingDataError, match="1 expected entries are missing: 3.jpg"):
        check_placed(where, "Flickr30K images", REQUEST, expect=["0.jpg", "3.jpg"])
    empty = tmp_path / "annotations.jsonl"
    empty.touch()
    with pytest.raises(MissingDataError, match="the file is empty"):
        check_placed(empty, "VCR annotations", REQUEST)


def test_placed_gated_data_is_summarised(tmp_path):
    where = tmp_path / "images"
    (where / "sub").mkdir(parents=True)
    (where / "0.jpg").write_bytes(b"12345")
    (where / "sub" / "1.jpg").write_bytes(b"123")
    summary = check_placed(where, "Flickr30K images", REQUEST, expect=2)
    assert summary == {"path": str(where), "files": 2, "bytes": 8}
    assert check_placed(where, "x", REQUEST, expect=["0.jpg", "sub/1.jpg"])["files"] == 2
    linked = tmp_path / "linked"
    linked.symlink_to(where)  # a symlink to an existing copy is as good as the copy
    assert check_placed(linked, "x", REQUEST)["files"] == 2


# --- config -------------------------------------------------------------------------------------


def test_the_schema_accepts_downloads_and_manual_entries_and_names_bad_keys(repo):
    schema = load_schema(repo / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((repo / "config.yaml").read_text())
    check_config({**config, "downloads": {"ann.zip": {
        "url": "https://example.org/ann.zip", "sha256": DIGEST, "extract": True}},
        "manual": {"vcr": {"path": "data/vcr/raw/images", "what": "VCR images",
                           "request": REQUEST, "min_files": 10}}}, schema)
    with pytest.raises(ConfigError) as info:
        check_config({**config, "downloads": {
            "bad name": {"url": "https://example.org/a", "sha256": DIGEST},
            "a.zip": {"url": "example.org/a.zip", "sha256": "abc", "unzip": True}},
            "manual": {"vcr": {"path": "x", "what": "VCR images"}}}, schema)
    message = str(info.value)
    assert "downloads: got 'bad name'" in message
    assert "downloads.a.zip: unknown key(s) ['unzip']" in message
    assert "downloads.a.zip.sha256: got 'abc'; expected the file's sha256: 64 hex digits" \
        in message
    assert "downloads.a.zip.url: got 'example.org/a.zip'" in message
    assert "manual.vcr: 'request' is a required property" in message


# --- the rules ----------------------------------------------------------------------------------


@pytest.fixture()
def workflow(repo, tmp_path):
    return copy_workflow(tmp_path / "wf")


def overlay(workdir: Path, config: dict) -> str:
    path = workdir / "configs" / "downloads.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_the_rules_download_verify_and_extract(server, workflow):
    archive = make_zip(workflow / "pack.zip", FILES)
    data = archive.read_bytes()
    archive.unlink()
    half = len(data) // 2
    url = server.add("pack.zip", data=data, cut_after=half, cuts=1)
    config = {"downloads": {
        "pack.zip": {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "extract": True},
    }}
    result = snakemake(workflow, "--cores", "1", "data/tiny/raw/pack.zip.d",
                       overrides=(overlay(workflow, config),))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    raw = workflow / "data" / "tiny" / "raw"
    assert (raw / "pack.zip").read_bytes() == data
    extracted = tree(raw / "pack.zip.d")
    assert extracted.pop(".snakemake_timestamp") == b""  # Snakemake's mark on directory outputs
    assert extracted == FILES
    assert server.files["pack.zip"].ranges == [None, f"bytes={half}-"]
    download_log = (workflow / "logs/tiny/download/pack.zip.log").read_text()
    assert f"resuming at byte {half}" in download_log and "verified" in download_log
    assert (workflow / "benchmarks/runs/tiny/extract/pack.zip.tsv").is_file()


@pytest.mark.slow
def test_a_wrong_checksum_fails_the_rule_naming_the_url_and_leaves_no_output(server, workflow):
    url = server.add("a.bin")
    config = {"downloads": {"a.bin": {"url": url, "sha256": "f" * 64}}}
    result = snakemake(workflow, "--cores", "1", "data/tiny/raw/a.bin",
                       overrides=(overlay(workflow, config),))
    assert result.returncode != 0
    log = (workflow / "logs/tiny/download/a.bin.log").read_text()
    assert "ChecksumError" in log and url in log and DIGEST in log
    assert not (workflow / "data/tiny/raw").exists() or \
        list((workflow / "data/tiny/raw").iterdir()) == []


@pytest.mark.slow
def test_missing_manual_data_fails_naming_the_path_and_the_request_url(workflow):
    where = workflow / "gated" / "flickr30k-images"
    config = {"manual": {"flickr30k-images": {
        "path": "gated/flickr30k-images", "what": "Flickr30K images", "request": REQUEST,
        "min_files": 2,
    }}}
    target = "data/tiny/raw/flickr30k-images.placed.json"
    result = snakemake(workflow, "--cores", "1", target, overrides=(overlay(workflow, config),))
    assert result.returncode != 0
    log = (workflow / "logs/tiny/check_manual/flickr30k-images.log").read_text()
    assert str(where) in log and REQUEST in log
    assert not (workflow / target).exists()
    where.mkdir(parents=True)
    for i in range(2):
        (where / f"{i}.jpg").write_bytes(b"jpg")
    result = snakemake(workflow, "--cores", "1", target, overrides=(overlay(workflow, config),))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workflow / target).read_text())["files"] == 2


@pytest.mark.slow
def test_without_downloads_the_default_dag_is_unchanged(workflow):
    result = snakemake(workflow, "-n", "results/table.csv", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert jobs["data_synthetic"] == "1" and jobs["pixels"] == "4" and jobs["total"] == "54"
    assert not {"download", "extract", "check_manual"} & set(jobs)
