"""Model zoo: downloads against a local HTTP server (resume, checksums, HTTP errors, disk full),
checkpoints carrying pickled code, pins, and conversion of official and solo-learn checkpoints.

No test touches the internet: the server runs on 127.0.0.1 inside the test process.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import yaml

from solo_mixmask.backbones import create_backbone
from solo_mixmask.cli import main as cli
from solo_mixmask.errors import CheckpointError, DownloadError
from solo_mixmask.eval.checkpoints import load_backbone, load_checkpoint_file
from solo_mixmask.zoo import (
    convert,
    drive_file_id,
    fetch,
    is_google_drive,
    load_manifest,
    read_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the test server

class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range support; ``/truncate/NAME`` cuts the first response for
    NAME after a third of its body and closes the connection."""

    def do_GET(self) -> None:  # noqa: N802
        srv: Any = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        key, truncate = self.path.lstrip("/"), False
        if key.startswith("truncate/"):
            key = key[len("truncate/"):]
            truncate = key not in srv.truncated
            srv.truncated.add(key)
        data: Optional[bytes] = srv.files.get(key)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
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
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body[:len(body) // 3] if truncate else body)
        self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server():
    srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.truncated = {}, [], set()
    srv.handle_error = lambda request, address: None  # clients that hang up on purpose
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def pins(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "config" / "zoo-pins.json"
    monkeypatch.setenv("SOLO_MIXMASK_ZOO_PINS", str(path))
    return path


# -------------------------------------------------------------------------------- checkpoints

def official_state(name: str = "resnet18", width: float = 0.125, mlp: int = 32,
                   seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A model in the official MoCo/MixMask layout: query and key encoders with an MLP ``fc``
    head (``fc.0``, ``fc.2``), plus the queue."""
    torch.manual_seed(seed)
    kwargs = {"width": width} if width != 1.0 else {}
    model = create_backbone(name, **kwargs)
    feat = model.num_features
    state: dict[str, torch.Tensor] = {}
    for enc in ("encoder_q", "encoder_k"):
        for k, v in model.state_dict().items():
            state[f"module.{enc}.{k}"] = v.clone() if enc == "encoder_q" else torch.randn_like(
                v.float()).to(v.dtype)
        state[f"module.{enc}.fc.0.weight"] = torch.randn(feat, feat)
        state[f"module.{enc}.fc.0.bias"] = torch.randn(feat)
        state[f"module.{enc}.fc.2.weight"] = torch.randn(mlp, feat)
        state[f"module.{enc}.fc.2.bias"] = torch.randn(mlp)
    state["module.queue"] = torch.randn(mlp, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return model, state


def checkpoint_bytes(seed: int = 0) -> bytes:
    _, state = official_state(seed=seed)
    buf = io.BytesIO()
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state}, buf)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _RunsCode:
    """Pickles as a call to exec: loading it unsafely writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def evil_checkpoint_bytes(marker: Path) -> bytes:
    _, state = official_state()
    buf = io.BytesIO()
    torch.save({"state_dict": state, "hook": _RunsCode(marker)}, buf)
    return buf.getvalue()


def write_manifest(tmp: Path, entries: list[dict[str, Any]]) -> Path:
    base = {"method": "mocov2plus", "variant": "mixmask", "dataset": "imagenet",
            "backbone": "resnet18", "epochs": 1, "metric": {"name": "linear_top1", "value": 1.0},
            "format": "official", "sha256": None}
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checkpoints": [{**base, **e}
                                                                  for e in entries]}))
    return path


def zoo(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli(["zoo", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------- downloads

def test_good_file_is_verified_and_renamed(server, tmp_path):
    data = checkpoint_bytes()
    server.files["good.pth"] = data
    dest = tmp_path / "dl" / "good.pth"
    path, digest = fetch(f"{server.url}/good.pth", dest, sha(data), progress=False)
    assert path == dest and dest.read_bytes() == data and digest == sha(data)
    assert not (tmp_path / "dl" / "good.pth.part").exists()
    assert server.requests == [("/good.pth", None)]


def test_truncated_transfer_resumes_with_a_range_request(server, tmp_path):
    data = checkpoint_bytes()
    server.files["big.pth"] = data
    dest = tmp_path / "big.pth"
    fetch(f"{server.url}/truncate/big.pth", dest, sha(data), progress=False)
    assert dest.read_bytes() == data
    (first, r1), (second, r2) = server.requests
    assert r1 is None and r2 == f"bytes={len(data) // 3}-"


def test_existing_part_file_is_resumed_not_refetched(server, tmp_path):
    data = checkpoint_bytes()
    server.files["c.pth"] = data
    dest = tmp_path / "c.pth"
    (tmp_path / "c.pth.part").write_bytes(data[:1000])
    fetch(f"{server.url}/c.pth", dest, sha(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/c.pth", "bytes=1000-")]


def test_wrong_checksum_deletes_the_download(server, tmp_path, capsys):
    data = checkpoint_bytes()
    server.files["w.pth"] = data
    with pytest.raises(DownloadError, match="sha256 mismatch.*deleted the download"):
        fetch(f"{server.url}/w.pth", tmp_path / "w.pth", "0" * 64, progress=False)
    assert list(tmp_path.glob("w.pth*")) == []
    manifest = write_manifest(tmp_path, [{"name": "w", "url": f"{server.url}/w.pth",
                                          "sha256": "ab" * 32}])
    rc, _, err = zoo(capsys, "download", "w", "--manifest", str(manifest), "--dir",
                     str(tmp_path / "d"), "--quiet")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: sha256 mismatch")
    assert not (tmp_path / "d").exists()


def test_http_404_is_one_clear_line(server, tmp_path, capsys):
    manifest = write_manifest(tmp_path, [{"name": "gone", "url": f"{server.url}/missing.pth"}])
    rc, _, err = zoo(capsys, "download", "gone", "--manifest", str(manifest), "--dir",
                     str(tmp_path / "d"), "--quiet")
    assert rc == 2
    assert err == f"error: download failed: HTTP 404 Not Found for {server.url}/missing.pth\n"
    assert not (tmp_path / "d").exists()


def snapshot(root: Path) -> dict[Path, Optional[tuple[int, int]]]:
    """Every file (size, mtime) and every folder (None) under ``root``."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


@pytest.mark.parametrize("kind", ["http 404", "sha256 mismatch", "missing file", "not weights"])
def test_a_failed_download_leaves_nothing_that_was_not_there(kind, server, tmp_path, capsys):
    """A new download folder (and its new parents) goes again; a folder the user already had
    stays, with their files, as it was."""
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint\n" * 40)
    url = {"http 404": f"{server.url}/missing.pth", "sha256 mismatch": bad.as_uri(),
           "missing file": (tmp_path / "nope.pth").as_uri(), "not weights": bad.as_uri()}[kind]
    expected = "ab" * 32 if kind == "sha256 mismatch" else None
    manifest = write_manifest(tmp_path, [{"name": "m", "url": url, "sha256": expected}])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    for target in (tmp_path / "cache" / "solo-mixmask" / "zoo", mine, mine / "zoo"):
        before = snapshot(tmp_path)
        rc, _, err = zoo(capsys, "download", "m", "--manifest", str(manifest), "--dir",
                         str(target), "--quiet")
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert snapshot(tmp_path) == before, f"--dir {target} left files or folders behind"
    assert not (tmp_path / "cache").exists()


def test_a_stale_local_file_is_kept_until_its_replacement_is_verified(server, tmp_path, capsys):
    good = checkpoint_bytes()
    directory = tmp_path / "d"
    directory.mkdir()
    stale = directory / "s.pth"
    stale.write_bytes(b"an older file")
    manifest = write_manifest(tmp_path, [{"name": "s", "url": f"{server.url}/s.pth",
                                          "sha256": sha(good), "filename": "s.pth"}])
    argv = ["download", "s", "--manifest", str(manifest), "--dir", str(directory), "--quiet"]
    rc, out, err = zoo(capsys, *argv)  # the server does not have it (yet)
    assert rc == 2 and "does not match the expected sha256" in out and "HTTP 404" in err
    assert stale.read_bytes() == b"an older file"
    assert sorted(p.name for p in directory.iterdir()) == ["s.pth"]
    server.files["s.pth"] = good
    rc, _, _ = zoo(capsys, *argv)
    assert rc == 0 and stale.read_bytes() == good


def test_a_download_folder_that_cannot_be_created_is_one_line(server, tmp_path, capsys):
    server.files["ok.pth"] = checkpoint_bytes()
    manifest = write_manifest(tmp_path, [{"name": "ok", "url": f"{server.url}/ok.pth"}])
    (tmp_path / "a-file").write_text("not a folder")
    target = tmp_path / "a-file" / "zoo"
    rc, _, err = zoo(capsys, "download", "ok", "--manifest", str(manifest), "--dir", str(target),
                     "--quiet")
    assert rc == 2 and err == f"error: cannot create the download folder {target}: Not a directory\n"
    assert server.requests == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_is_reported_and_leaves_no_final_file(server, tmp_path, capsys):
    """The partial file is a link to /dev/full, whose writes fail with ENOSPC: a real full disk."""
    server.files["f.pth"] = checkpoint_bytes()
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "f.pth.part").symlink_to("/dev/full")
    manifest = write_manifest(tmp_path, [{"name": "f", "url": f"{server.url}/f.pth"}])
    rc, _, err = zoo(capsys, "download", "f", "--manifest", str(manifest), "--dir",
                     str(directory), "--quiet")
    assert rc == 2 and err.startswith("error: disk full while writing") and err.count("\n") == 1
    assert not (directory / "f.pth").exists()


def test_too_little_free_space_stops_before_writing(server, tmp_path, monkeypatch):
    import shutil

    from solo_mixmask.zoo import download

    server.files["s.pth"] = checkpoint_bytes()
    real = shutil.disk_usage
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=10))
    with pytest.raises(DownloadError, match="not enough disk space"):
        fetch(f"{server.url}/s.pth", tmp_path / "s.pth", progress=False)
    assert not (tmp_path / "s.pth").exists()


# ------------------------------------------------------------------------------- pickled code

def test_checkpoint_with_pickled_code_is_refused_not_run(server, tmp_path, capsys):
    marker = tmp_path / "marker"
    data = evil_checkpoint_bytes(marker)
    server.files["evil.pth"] = data
    # the manifest hash matches: the file is what was published, and still refused
    manifest = write_manifest(tmp_path, [{"name": "evil", "url": f"{server.url}/evil.pth",
                                          "sha256": sha(data)}])
    rc, _, err = zoo(capsys, "download", "evil", "--manifest", str(manifest), "--dir",
                     str(tmp_path / "d"), "--quiet")
    assert rc == 2 and err.startswith("error: refusing") and "deleted the download" in err
    assert not marker.exists()
    assert not (tmp_path / "d").exists()

    local = tmp_path / "evil.pth"
    local.write_bytes(data)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint_file(local)
    with pytest.raises(CheckpointError, match="refusing"):
        read_checkpoint(local)
    rc, _, err = zoo(capsys, "convert", str(local))
    assert rc == 2 and err.startswith("error: refusing")
    (tmp_path / "m").mkdir()
    unverified = write_manifest(tmp_path / "m", [{"name": "evil", "url": f"{server.url}/evil.pth"}])
    rc, _, err = zoo(capsys, "pin", "evil", "--manifest", str(unverified), "--file", str(local))
    assert rc == 2 and err.startswith("error: refusing") and "deleted" not in err
    assert local.is_file()  # the user's own file is refused, not deleted
    assert not marker.exists()
    # the payload is live: an unsafe load runs it (so the checks above can fail)
    torch.load(local, map_location="cpu", weights_only=False)
    assert marker.read_text() == "code ran"


# ----------------------------------------------------------------------------- manifest, pins

def test_repository_manifest_lists_the_official_checkpoints(capsys):
    entries = load_manifest(REPO / "zoo" / "manifest.yaml")
    by_id = {drive_file_id(e.url): e for e in entries.values()}
    mixmask = by_id["1nwqjaJ0ubIebzncKlc1-V-6OsQDdzDGE"]
    star = by_id["1bHTQIaD3DDFhNOKL6pNQBoim_C_3iSNk"]
    assert (mixmask.metric["value"], star.metric["value"]) == (69.2, 69.5)
    for e in (mixmask, star):
        assert (e.dataset, e.backbone, e.epochs, e.format) == ("imagenet", "resnet50", 200,
                                                                "official")
        assert e.sha256 is None and is_google_drive(e.url)
        assert "kirill-vish/MixMask" in e.source
    rc, out, _ = zoo(capsys, "list", "--manifest", str(REPO / "zoo" / "manifest.yaml"))
    assert rc == 0 and out.count("unverified") == 2
    rc, out, _ = zoo(capsys, "list", "--names", "--dataset", "imagenet")
    assert rc == 0 and sorted(out.split()) == sorted(entries)


def test_pin_records_first_download_and_later_downloads_must_match(server, tmp_path, pins,
                                                                   capsys):
    first = checkpoint_bytes(seed=0)
    server.files["t.pth"] = first
    manifest = write_manifest(tmp_path, [{"name": "t", "url": f"{server.url}/t.pth",
                                          "filename": "t.pth"}])
    m = ["--manifest", str(manifest)]
    rc, out, _ = zoo(capsys, "download", "t", *m, "--dir", str(tmp_path / "d1"), "--quiet")
    assert rc == 0 and "unverified" in out and sha(first) in out
    rc, out, _ = zoo(capsys, "pin", "t", *m, "--dir", str(tmp_path / "d1"))
    assert rc == 0 and sha(first) in out
    assert json.loads(pins.read_text())["pins"]["t"]["sha256"] == sha(first)
    rc, out, _ = zoo(capsys, "list", *m, "--dir", str(tmp_path / "d1"))
    assert " pin " in out and " yes" in out

    # the server now hands out something else: the pinned hash rejects it
    second = checkpoint_bytes(seed=1)
    server.files["t.pth"] = second
    rc, _, err = zoo(capsys, "download", "t", *m, "--dir", str(tmp_path / "d2"), "--quiet")
    assert rc == 2 and f"expected {sha(first)}, got {sha(second)}" in err
    assert not (tmp_path / "d2").exists()
    other = tmp_path / "other.pth"
    other.write_bytes(second)
    rc, _, err = zoo(capsys, "pin", "t", *m, "--file", str(other))
    assert rc == 2 and "--force" in err
    assert json.loads(pins.read_text())["pins"]["t"]["sha256"] == sha(first)


def test_google_drive_links_go_through_gdown(monkeypatch, tmp_path):
    """gdown is the dependency here (faked: no internet); the routing, the id and the
    verification around it are this package's."""
    import gdown

    data = checkpoint_bytes()
    calls: list[dict[str, Any]] = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        Path(kwargs["output"]).write_bytes(data)
        return kwargs["output"]

    monkeypatch.setattr(gdown, "download", fake_download)
    url = "https://drive.google.com/file/d/1nwqjaJ0ubIebzncKlc1-V-6OsQDdzDGE/view"
    path, digest = fetch(url, tmp_path / "g.pth", sha(data), progress=False)
    assert path.read_bytes() == data and digest == sha(data)
    assert calls[0]["id"] == "1nwqjaJ0ubIebzncKlc1-V-6OsQDdzDGE" and calls[0]["resume"] is True
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(url, tmp_path / "h.pth", "1" * 64, progress=False)
    assert list(tmp_path.glob("h.pth*")) == []

    def failing(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError(
            "Failed to retrieve file url:\n\n\tCannot retrieve the public link of the file.")

    monkeypatch.setattr(gdown, "download", failing)
    with pytest.raises(DownloadError, match="^Google Drive download of x1 failed: Failed to "
                       "retrieve file url:$"):
        fetch("gdrive:x1", tmp_path / "x.pth", progress=False)


# -------------------------------------------------------------------------------- conversion

def test_convert_official_resnet50_key_by_key(tmp_path, capsys):
    model, state = official_state("resnet50", width=1.0, mlp=128)
    src = tmp_path / "mixmask_r50.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.03}]}}, src)
    rc, out, _ = zoo(capsys, "convert", str(src), "-o", str(tmp_path / "r50.pt"),
                     "--format", "official")
    assert rc == 0, out
    converted = torch.load(tmp_path / "r50.pt", map_location="cpu", weights_only=True)
    expected = {k: v for k, v in model.state_dict().items()}
    got = converted["state_dict"]
    assert sorted(got) == sorted(f"backbone.{k}" for k in expected)
    for k, v in expected.items():
        assert torch.equal(got[f"backbone.{k}"], v), k
    assert converted["cfg"]["backbone"] == {"name": "resnet50",
                                            "kwargs": {"width": 1.0, "cifar_stem": False}}
    assert converted["cfg"]["data"]["dataset"] == "imagenet"
    origin = converted["converted_from"]
    assert origin["format"] == "official" and origin["epoch"] == 200
    assert origin["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

    backbone, info = load_backbone(tmp_path / "r50.pt")
    assert info["format"] == "solo_mixmask" and info["name"] == "resnet50"
    model.eval()
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x), model(x), atol=1e-5)


def _solo_checkpoint(tmp: Path, dataset: str = "cifar100") -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(3)
    model = create_backbone("resnet18", width=0.25, cifar_stem=True)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state.update({f"momentum_backbone.{k}": torch.zeros_like(v)
                  for k, v in model.state_dict().items()})
    state.update({"projector.0.weight": torch.randn(32, 128), "classifier.weight":
                  torch.randn(100, 128), "classifier.bias": torch.randn(100)})
    run = tmp / "trained_models" / "mixmask_byol" / "abcd1234"
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({
        "method": "mixmask_byol", "backbone": {"name": "resnet18", "kwargs": {}},
        "data": {"dataset": dataset}}))
    path = run / "byol-ep=9.ckpt"
    torch.save({"epoch": 9, "global_step": 90, "state_dict": state,
                "pytorch-lightning_version": "2.1.2"}, path)
    return model, path


def test_convert_solo_learn_checkpoint(tmp_path):
    model, path = _solo_checkpoint(tmp_path)
    out, info = convert(path)
    assert out.name == "byol-ep=9.solo_mixmask.pt"
    converted = torch.load(out, map_location="cpu", weights_only=True)
    assert sorted(converted["state_dict"]) == sorted(f"backbone.{k}" for k in model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(converted["state_dict"][f"backbone.{k}"], v), k
    cfg = converted["cfg"]
    assert cfg["backbone"] == {"name": "resnet18", "kwargs": {"width": 0.25, "cifar_stem": True}}
    assert cfg["data"]["dataset"] == "cifar100" and cfg["method"] == "mixmask_byol"
    assert converted["converted_from"]["format"] == "solo-learn"
    assert "pads its 3x3 conv by 2" in converted["converted_from"]["note"]
    backbone, _ = load_backbone(out)
    assert sum(p.numel() for p in backbone.parameters()) == sum(
        p.numel() for p in model.parameters())
    with pytest.raises(CheckpointError, match="already readable"):
        convert(out)
    with pytest.raises(CheckpointError, match="is a solo-learn checkpoint, not official"):
        convert(path, fmt="official")


def test_solo_learn_scheduler_hook_is_read_inertly(tmp_path, monkeypatch):
    """solo-learn (SimSiam) pickles functools.partial(static_lr, get_lr=<bound method>) into the
    scheduler state. Those names alone are read with inert stand-ins (solo-learn need not be
    installed and nothing runs); anything beyond them is still refused."""
    base = types.ModuleType("solo.methods.base")
    sched_mod = types.ModuleType("solo.utils.lr_scheduler")

    def static_lr(get_lr, param_group_indexes, lrs_to_replace):
        raise AssertionError("must never run")

    static_lr.__module__, static_lr.__qualname__ = "solo.methods.base", "static_lr"
    base.static_lr = static_lr
    Sched = type("LinearWarmupCosineAnnealingLR", (),
                 {"__module__": "solo.utils.lr_scheduler", "get_lr": lambda self: [0.1]})
    sched_mod.LinearWarmupCosineAnnealingLR = Sched
    fake = {"solo": types.ModuleType("solo"), "solo.methods": types.ModuleType("solo.methods"),
            "solo.utils": types.ModuleType("solo.utils"), "solo.methods.base": base,
            "solo.utils.lr_scheduler": sched_mod}
    model, path = _solo_checkpoint(tmp_path, dataset="imagenet100")
    ckpt = torch.load(path, weights_only=True)
    marker = tmp_path / "marker"
    with monkeypatch.context() as m:
        for name, module in fake.items():
            m.setitem(sys.modules, name, module)
        sched = Sched()
        hook = functools.partial(static_lr, get_lr=sched.get_lr, param_group_indexes=[2],
                                 lrs_to_replace=[0.05])
        ckpt["lr_schedulers"] = [{"last_epoch": 9, "get_lr": hook}]
        torch.save(ckpt, path)
        ckpt["lr_schedulers"].append({"x": _RunsCode(marker)})
        torch.save(ckpt, tmp_path / "with-code.ckpt")

    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint_file(path)
    obj = read_checkpoint(path)
    assert "lr_schedulers" not in obj and len(obj["state_dict"]) > 0
    out, info = convert(path)
    assert info["cfg"]["data"]["dataset"] == "imagenet100"
    with pytest.raises(CheckpointError, match="refusing"):
        read_checkpoint(tmp_path / "with-code.ckpt")
    assert not marker.exists()
