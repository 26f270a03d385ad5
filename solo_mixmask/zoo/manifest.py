"""The model zoo's manifest (``zoo/manifest.yaml``) and the user's pin file.

An entry whose ``sha256`` is ``null`` is unverified: nobody published its hash. ``zoo pin NAME``
records the hash of the user's first verified download (complete, readable as weights only, with a
backbone) in a pin file under the user's config directory, and every later download of that entry
must match it (trust on first use). The pin file is per user rather than in the manifest because
the manifest is versioned with the code and may sit in a read-only install.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import ConfigError

FORMATS = ("official", "solo-learn", "solo_mixmask")
REQUIRED = ("name", "method", "variant", "dataset", "backbone", "epochs", "metric", "url", "format")
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Entry:
    name: str
    method: str
    variant: str
    dataset: str
    backbone: str
    epochs: int
    metric: dict[str, Any]
    url: str
    format: str
    sha256: Optional[str] = None
    filename: Optional[str] = None
    description: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return self.filename or f"{self.name}.pth"

    def metric_text(self) -> str:
        return f"{self.metric.get('name', 'metric')} {self.metric.get('value', '?')}"


def repo_manifest() -> Path:
    """``zoo/manifest.yaml`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "zoo" / "manifest.yaml"


def packaged_manifest() -> Path:
    """The copy installed with the package (a link to ``zoo/manifest.yaml`` in the repository)."""
    return Path(__file__).resolve().with_name("manifest.yaml")


def find_manifest(path: Optional[str | os.PathLike] = None) -> Path:
    """``path``, else ``$SOLO_MIXMASK_ZOO_MANIFEST``, else the checkout's ``zoo/manifest.yaml``,
    else the copy installed with the package."""
    explicit = path or os.environ.get("SOLO_MIXMASK_ZOO_MANIFEST")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"zoo manifest not found: {p}")
        return p
    for candidate in (repo_manifest(), packaged_manifest()):
        if candidate.is_file():
            return candidate
    raise ConfigError("zoo manifest not found: pass --manifest PATH or set "
                      "SOLO_MIXMASK_ZOO_MANIFEST (it ships as zoo/manifest.yaml in the repository)")


def load_manifest(path: Optional[str | os.PathLike] = None) -> dict[str, Entry]:
    """The entries by name; a malformed entry is a ConfigError naming it."""
    p = find_manifest(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {p}: {' '.join(str(exc).split())}") from None
    items = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{p}: expected a 'checkpoints' list")
    entries: dict[str, Entry] = {}
    for i, item in enumerate(items):
        entry = _entry(item, f"{p}: checkpoints[{i}]")
        if entry.name in entries:
            raise ConfigError(f"{p}: duplicate entry {entry.name!r}")
        entries[entry.name] = entry
    return entries


def _entry(item: Any, where: str) -> Entry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is not a mapping")
    missing = [k for k in REQUIRED if item.get(k) is None]
    if missing:
        raise ConfigError(f"{where} ({item.get('name', '?')}) lacks {missing}")
    if item["format"] not in FORMATS:
        raise ConfigError(f"{where}: format {item['format']!r} is not one of {list(FORMATS)}")
    sha = item.get("sha256")
    if sha is not None and not _SHA.match(str(sha).lower()):
        raise ConfigError(f"{where}: sha256 must be 64 hex digits or null")
    if not isinstance(item["metric"], dict):
        raise ConfigError(f"{where}: metric must be a mapping like {{name: linear_top1, value: 69.2}}")
    known = set(Entry.__dataclass_fields__) - {"extra"}
    return Entry(**{k: v for k, v in item.items() if k in known and k != "sha256"},
                 sha256=str(sha).lower() if sha else None,
                 extra={k: v for k, v in item.items() if k not in known})


def get_entry(entries: dict[str, Entry], name: str) -> Entry:
    if name not in entries:
        raise ConfigError(f"unknown zoo entry {name!r}: choose one of {sorted(entries)}")
    return entries[name]


# ----------------------------------------------------------------------------------------- pins

def pins_path() -> Path:
    """``$SOLO_MIXMASK_ZOO_PINS`` or ``$XDG_CONFIG_HOME/solo-mixmask/zoo-pins.json``."""
    env = os.environ.get("SOLO_MIXMASK_ZOO_PINS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "solo-mixmask" / "zoo-pins.json"


def load_pins() -> dict[str, dict[str, Any]]:
    path = pins_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the pin file {path}: {exc}") from None
    pins = data.get("pins") if isinstance(data, dict) else None
    return pins if isinstance(pins, dict) else {}


def save_pin(entry: Entry, sha256: str, size: int) -> Path:
    """Records ``sha256`` for ``entry`` (written atomically)."""
    path = pins_path()
    pins = load_pins()
    pins[entry.name] = {"sha256": sha256, "url": entry.url, "size": size,
                        "pinned": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "pins": pins}, indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def expected_sha256(entry: Entry) -> tuple[Optional[str], str]:
    """The hash a download must have and where it comes from: ``manifest``, ``pin`` or
    ``unverified`` (no hash). A pin recorded for another URL does not apply."""
    if entry.sha256:
        return entry.sha256, "manifest"
    pin = load_pins().get(entry.name)
    if isinstance(pin, dict) and pin.get("url") == entry.url and pin.get("sha256"):
        return str(pin["sha256"]), "pin"
    return None, "unverified"


def entry_dict(entry: Entry) -> dict[str, Any]:
    d = asdict(entry)
    d.update(d.pop("extra"))
    return d
