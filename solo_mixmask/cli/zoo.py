"""``solo-mixmask zoo list | download NAME | pin NAME | convert FILE``.

Downloads land in ``--dir`` (default ``$SOLO_MIXMASK_ZOO_DIR`` or ``~/.cache/solo-mixmask/zoo``);
see ``solo_mixmask.zoo`` for verification, pins and conversion.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, DownloadError


def default_dir() -> Path:
    env = os.environ.get("SOLO_MIXMASK_ZOO_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "solo-mixmask" / "zoo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser, with_dir: bool = True) -> None:
        q.add_argument("--manifest", default=None,
                       help="manifest file (default: $SOLO_MIXMASK_ZOO_MANIFEST or zoo/manifest.yaml)")
        if with_dir:
            q.add_argument("--dir", type=Path, default=None,
                           help="download directory (default: $SOLO_MIXMASK_ZOO_DIR or "
                           "~/.cache/solo-mixmask/zoo)")

    q = sub.add_parser("list", help="the checkpoints of the manifest")
    common(q)
    q.add_argument("--dataset", default=None, help="only entries of this dataset")
    q.add_argument("--names", action="store_true", help="print the names only (for scripts)")
    q.add_argument("--json", action="store_true", help="print the entries as JSON")

    q = sub.add_parser("download", help="download NAME, verify its sha256 and that it loads as "
                       "weights only")
    common(q)
    q.add_argument("name")
    q.add_argument("--convert", action="store_true",
                   help="also write this package's format next to it (see `zoo convert`)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")

    q = sub.add_parser("pin", help="record the sha256 of your first verified download of an "
                       "unverified entry")
    common(q)
    q.add_argument("name")
    q.add_argument("--file", type=Path, default=None,
                   help="the downloaded file (default: the entry's file in --dir; downloaded if "
                   "missing)")
    q.add_argument("--force", action="store_true", help="replace an existing, different pin")
    q.add_argument("--quiet", action="store_true", help="no progress bar")

    q = sub.add_parser("convert", help="official MixMask/MoCo or solo-learn checkpoint -> this "
                       "package's format")
    common(q, with_dir=False)
    q.add_argument("file", type=Path)
    q.add_argument("-o", "--output", type=Path, default=None,
                   help="output file (default: <name>.solo_mixmask.pt next to FILE)")
    q.add_argument("--format", choices=["auto", "official", "solo-learn"], default="auto")
    q.add_argument("--dataset", default=None,
                   help="dataset the model was trained on (default: from the zoo entry, solo-learn's "
                   "args.json, or imagenet for official checkpoints)")
    q.add_argument("--backbone", default=None, help="backbone name (default: inferred)")
    q.add_argument("--entry", default=None, help="zoo entry the file came from (recorded)")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "download": _download, "pin": _pin,
            "convert": _convert}[args.zoo_command](args)


def _entries(args: argparse.Namespace):
    from ..zoo import load_manifest

    return load_manifest(args.manifest)


def _dir(args: argparse.Namespace) -> Path:
    return args.dir if args.dir is not None else default_dir()


def _list(args: argparse.Namespace) -> int:
    from ..zoo import expected_sha256
    from ..zoo.manifest import entry_dict

    entries = [e for e in _entries(args).values()
               if args.dataset is None or e.dataset == args.dataset]
    if args.names:
        for e in entries:
            print(e.name)
        return 0
    if args.json:
        print(json.dumps([entry_dict(e) for e in entries], indent=2))
        return 0
    rows = [("NAME", "METHOD", "VARIANT", "DATASET", "BACKBONE", "EPOCHS", "REPORTED", "SHA256",
             "LOCAL")]
    for e in entries:
        _, check = expected_sha256(e)
        local = "yes" if (_dir(args) / e.file_name).is_file() else "-"
        rows.append((e.name, e.method, e.variant, e.dataset, e.backbone, str(e.epochs),
                     e.metric_text(), check, local))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _safe_check(path: Path) -> None:
    """A checkpoint must read as weights only and hold backbone weights (CheckpointError if not)."""
    from ..eval.checkpoints import split_backbone
    from ..zoo import read_checkpoint

    split_backbone(read_checkpoint(path))


def _obtain(entry, directory: Path, expected: Optional[str], quiet: bool) -> tuple[Path, str]:
    """The entry's verified local file, downloading it if needed."""
    from ..zoo import fetch, sha256_file

    dest = directory / entry.file_name
    if dest.is_file():
        digest = sha256_file(dest)
        if expected is None or digest == expected:
            print(f"{entry.name}: already downloaded at {dest}")
            return dest, digest
        # replaced only once the new download is verified: a failure leaves the old file
        print(f"{entry.name}: {dest} does not match the expected sha256; downloading it again")
    return fetch(entry.url, dest, expected, check=_safe_check, progress=not quiet)


def _download(args: argparse.Namespace) -> int:
    from ..zoo import expected_sha256, get_entry

    entry = get_entry(_entries(args), args.name)
    expected, source = expected_sha256(entry)
    path, digest = _obtain(entry, _dir(args), expected, args.quiet)
    if expected is None:
        print(f"{entry.name}: saved {path}\n  unverified: no published sha256; this file has "
              f"sha256 {digest}\n  record it with `solo-mixmask zoo pin {entry.name}`")
    else:
        print(f"{entry.name}: saved {path} (sha256 verified against the {source})")
    if args.convert:
        _convert_one(path, entry=entry)
    return 0


def _pin(args: argparse.Namespace) -> int:
    from ..zoo import expected_sha256, get_entry, load_pins, save_pin, sha256_file

    entry = get_entry(_entries(args), args.name)
    if entry.sha256:
        print(f"{entry.name}: the manifest already gives its sha256 ({entry.sha256}); nothing to pin")
        return 0
    if args.file is not None:
        if not args.file.is_file():
            raise ConfigError(f"file not found: {args.file}")
        _safe_check(args.file)
        path, digest = args.file, sha256_file(args.file)
    else:
        path, digest = _obtain(entry, _dir(args), expected_sha256(entry)[0], args.quiet)
    old = load_pins().get(entry.name)
    if isinstance(old, dict) and old.get("url") == entry.url and old.get("sha256") == digest:
        print(f"{entry.name}: already pinned to sha256 {digest}")
        return 0
    if (isinstance(old, dict) and old.get("url") == entry.url and old.get("sha256")
            and not args.force):
        raise DownloadError(f"{entry.name} is pinned to sha256 {old['sha256']} but {path} has "
                            f"{digest}; use --force to replace the pin")
    pin_file = save_pin(entry, digest, path.stat().st_size)
    print(f"{entry.name}: pinned sha256 {digest} in {pin_file}")
    return 0


def _convert_one(path: Path, output: Optional[Path] = None, **kwargs: Any) -> Path:
    from ..zoo import convert

    out, info = convert(path, output, **kwargs)
    bb = info["cfg"]["backbone"]
    print(f"converted {path.name} ({info['converted_from']['format']}) -> {out}\n"
          f"  backbone {bb['name']} {bb['kwargs']}, dataset {info['cfg']['data']['dataset']}")
    if "note" in info["converted_from"]:
        print(f"  note: {info['converted_from']['note']}")
    return out


def _convert(args: argparse.Namespace) -> int:
    from ..zoo import get_entry

    entry = get_entry(_entries(args), args.entry) if args.entry else None
    _convert_one(args.file, args.output, fmt=args.format, dataset=args.dataset,
                 backbone=args.backbone, entry=entry)
    return 0
