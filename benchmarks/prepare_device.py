"""Builds what a GPU window carries, checks it fits, and prints the device call.

    python benchmarks/prepare_device.py               # .whl/, .device/data/, .device/commit
    python benchmarks/prepare_device.py --data DIR    # the folder holding cifar10-jpeg/

A lent machine has PyTorch, Lightning, timm and PyYAML but not omegaconf or hydra, no network and
no ``../shared``. This writes, in the checkout (both folders are git-ignored):

- ``.whl/``: exactly the wheels of ``device_env.CONFIG_WHEELS`` for CPython 3.12 (pure Python;
  antlr4's PyPI release is a source archive, so its wheel is built here, because the loader skips
  archives);
- ``.device/data/cifar10-jpeg/{train,test}.npz``: the CIFAR-10 archives (18 MB);
- ``.device/commit``: the commit id with ``+dirty`` when the tree that travels differs from it.

Then it adds up what travels (tracked files, untracked files git does not ignore, the carried
folders) against the 64 MiB limit and prints the call: ``command``, ``carry`` and ``timeout_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from device_env import CONFIG_WHEELS, DATA_MARK, REPO, BadInput, data_root, git_commit, run_main

LIMIT = 64 * 2**20
CARRY = [".whl", ".device"]
COMMAND = "PYTHONUNBUFFERED=1 python3 benchmarks/gpu_window.py"
TIMEOUT_S = 600
SPLITS = ("train.npz", "test.npz")
PIP_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
              "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"]


def pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--no-deps"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()
                 and "is ignored" not in ln]
        raise BadInput(f"pip {args[0]} failed: {lines[-1] if lines else proc.returncode}")


def build_wheels(dest: Path) -> list[Path]:
    """``dest`` holds exactly one wheel per library of the working set, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in CONFIG_WHEELS.items():
            spec = f"{name}=={version}"
            try:
                pip("download", *PIP_TARGET, "-d", tmp, spec)
            except BadInput:  # a source release only: build the (pure-Python) wheel here
                pip("wheel", "-w", tmp, spec)
        found = sorted(Path(tmp).glob("*.whl"))
        if len(found) != len(CONFIG_WHEELS) or any(not w.name.endswith("-none-any.whl")
                                                    and "cp312" not in w.name for w in found):
            raise BadInput(f"unexpected wheels: {[w.name for w in found]}")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for w in found:
            shutil.copy(w, dest / w.name)
    return sorted(dest.glob("*.whl"))


def copy_data(src: Path, dest: Path) -> list[Path]:
    out = []
    for split in SPLITS:
        a, b = src / DATA_MARK.parent / split, dest / DATA_MARK.parent / split
        if not a.is_file():
            raise BadInput(f"{a} not found")
        if not b.is_file() or b.stat().st_size != a.stat().st_size:
            b.parent.mkdir(parents=True, exist_ok=True)
            tmp = b.with_name(b.name + ".tmp")
            shutil.copyfile(a, tmp)
            os.replace(tmp, b)
        out.append(b)
    return out


def travelling_bytes(repo: Path, root: Path) -> tuple[int, int]:
    """Bytes of the tree that travels from ``repo`` (tracked and untracked-not-ignored files) and
    of the carried folders under ``root``."""
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True).stdout
    tree = sum((repo / f).stat().st_size for f in files.decode().split("\0")
               if f and (repo / f).is_file())
    carried = sum(p.stat().st_size for c in CARRY for p in (root / c).rglob("*") if p.is_file())
    return tree, carried


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="the folder holding cifar10-jpeg/ (default: found "
                   "as the benchmarks find it)")
    p.add_argument("--dest", type=Path, default=REPO,
                   help="where .whl/ and .device/ go (default: this checkout)")
    args = p.parse_args()
    src = data_root(args.data)
    if src == (args.dest / ".device" / "data").resolve():
        raise BadInput(f"--data {src} is the folder this would write: pass the shared data folder")
    sha = git_commit(REPO, untracked=True)
    if sha is None:
        raise BadInput(f"{REPO} is not a git checkout: the commit of what travels is unknown")
    wheels = build_wheels(args.dest / ".whl")
    data = copy_data(src, args.dest / ".device" / "data")
    (args.dest / ".device" / "commit").write_text(sha + "\n")
    tree, carried = travelling_bytes(REPO, args.dest)
    total = tree + carried
    for w in wheels:
        print(f"wheel  {w.relative_to(args.dest)} ({w.stat().st_size / 1e3:.0f} kB)")
    for d in data:
        print(f"data   {d.relative_to(args.dest)} ({d.stat().st_size / 1e6:.1f} MB)")
    print(f"commit {sha}")
    print(f"travels: tree {tree / 2**20:.1f} MiB + carried {carried / 2**20:.1f} MiB = "
          f"{total / 2**20:.1f} MiB of {LIMIT // 2**20} MiB")
    if total > LIMIT:
        raise BadInput(f"{total / 2**20:.1f} MiB would travel, over the {LIMIT // 2**20} MiB limit")
    print("device call:")
    print(json.dumps({"command": COMMAND, "carry": CARRY, "timeout_s": TIMEOUT_S}))
    return 0


if __name__ == "__main__":
    run_main(main)
