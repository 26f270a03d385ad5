"""What the benchmark scripts need to start on a bare copy of the tree (a lent GPU machine).

Standard library only, so it runs before anything is installed: the repository root on
``sys.path``; omegaconf, hydra-core and antlr4 installed from the carried wheels in ``.whl/`` when the
machine lacks them (into the temporary folder, never into the tree); the data folder (``--data``,
``$SOLO_MIXMASK_DATA``, the carried ``.device/data``, or ``../shared/data`` beside the checkout); the
commit id (git, else the ``.device/commit`` written by ``prepare_device.py``); the rules for what may
come back from the machine's ``$OUT``; and the one-line bad-input error of the package's CLI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
#: The working set of config libraries for the device's Python (3.12): pure-Python wheels, exact
#: versions (omegaconf 2.4 conflicts with hydra-core 1.3.8; PyYAML is already on the device).
CONFIG_WHEELS = {"omegaconf": "2.3.1", "hydra-core": "1.3.8", "antlr4-python3-runtime": "4.9.3"}
CONFIG_MODULES = ("omegaconf", "hydra", "antlr4")
WHEELS = REPO / ".whl"
DEVICE = REPO / ".device"
#: What may come back from a device's $OUT (the device tool's limits).
OUT_MAX_FILES, OUT_MAX_DEPTH = 8, 2
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
DATA_MARK = Path("cifar10-jpeg") / "train.npz"


class BadInput(Exception):
    """Input the user can fix: reported as one ``error:`` line, exit code 2."""


def run_main(main: Callable[[], int]) -> None:
    """Runs ``main`` as a script: bad input (ours or the package's) is one ``error:`` line and exit
    code 2, no traceback; then exits without waiting on loader teardown, which can stall at exit
    on a GPU machine."""
    try:
        code = main()
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except Exception as exc:  # the package's own bad-input errors, when it was imported
        errors = sys.modules.get("solo_mixmask.errors")
        if errors is None or not isinstance(exc, errors.SoloMixMaskError):
            raise
        print(f"error: {errors.one_line(exc)}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def site_dir() -> Path:
    return Path(tempfile.gettempdir()) / "solo-mixmask-site"


def _importable() -> bool:
    try:
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


def bootstrap(wheels: Path = WHEELS) -> str:
    """The repository on ``sys.path`` and the config libraries importable; returns where they come
    from. Children inherit both through ``PYTHONPATH``."""
    sys.dont_write_bytecode = True  # nothing written into the tree
    paths = [str(REPO)]
    if not _importable():
        site = site_dir()
        found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
        if not found:
            raise BadInput(f"omegaconf/hydra-core are not installed and {wheels} holds no wheels: "
                           "run python benchmarks/prepare_device.py and carry .whl")
        marker = site / ".installed"
        want = "\n".join(p.name for p in found)
        if not marker.is_file() or marker.read_text() != want:
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                   "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                                   "--target", str(site), *map(str, found)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BadInput(f"cannot install the wheels of {wheels}: "
                               f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            marker.write_text(want)
        paths.insert(0, str(site))
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    import omegaconf

    return f"omegaconf {omegaconf.__version__} from {Path(omegaconf.__file__).parent.parent}"


def data_root(arg: Optional[str | os.PathLike] = None) -> Path:
    """The folder holding ``cifar10-jpeg/train.npz``: ``--data``, ``$SOLO_MIXMASK_DATA``, the carried
    ``.device/data``, or ``../shared/data`` beside the checkout, first found."""
    if arg is not None:
        candidates = [("--data", Path(arg))]
    else:
        env = os.environ.get("SOLO_MIXMASK_DATA")
        candidates = [("$SOLO_MIXMASK_DATA", Path(env))] if env else []
        candidates += [("carried", DEVICE / "data"), ("beside", REPO.parent / "shared" / "data")]
    for _, path in candidates:
        if (path / DATA_MARK).is_file():
            return path.resolve()
    if arg is not None or os.environ.get("SOLO_MIXMASK_DATA"):
        name, path = candidates[0]
        raise BadInput(f"{name} {path}: no {DATA_MARK} there (the folder holding cifar10-jpeg/)")
    raise BadInput(f"no data: pass --data DIR (the folder holding {DATA_MARK}), or run "
                   "python benchmarks/prepare_device.py so that .device/data travels")


def git_commit(repo: Path = REPO, untracked: bool = False) -> Optional[str]:
    """``<short sha>`` plus ``+dirty`` when tracked files (and, with ``untracked``, files git does
    not ignore) differ from it; None outside a git checkout."""
    if not (repo / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        flag = "--untracked-files=normal" if untracked else "--untracked-files=no"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", flag],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def commit() -> str:
    """The engine's commit: git where the tree is a checkout, else what ``prepare_device.py`` wrote
    into ``.device/commit`` before the tree travelled."""
    found = git_commit()
    if found is not None:
        return found
    carried = DEVICE / "commit"
    if carried.is_file():
        return carried.read_text().strip() or "unknown"
    return "unknown"


def safe_name(text: str) -> str:
    """A file name of letters, digits, ``.``, ``_`` and ``-`` alone."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def device_slug(device: str) -> str:
    """``NVIDIA H200`` -> ``h200``, ``NVIDIA H100 80GB HBM3`` -> ``h100``, ``cpu (x86_64)`` -> ``cpu``:
    the folder name of a device kind's records."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", device.lower()) if w and w != "nvidia"]
    return words[0] if words else "unknown"


def out_problems(out: Path) -> list[str]:
    """Why ``out`` would not come back whole from a device: more than 8 files, a file more than two
    folders down, a name outside the safe set, or anything but plain files and folders."""
    problems, files = [], []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not SAFE_NAME.match(path.name):
            problems.append(f"{rel}: unsafe name")
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{rel}: not a plain file or folder")
        elif path.is_file():
            files.append(rel)
            if len(rel.parts) - 1 > OUT_MAX_DEPTH:
                problems.append(f"{rel}: more than {OUT_MAX_DEPTH} folders down")
    if len(files) > OUT_MAX_FILES:
        problems.append(f"{len(files)} files (at most {OUT_MAX_FILES} come back)")
    return problems
