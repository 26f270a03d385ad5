"""The one validator of every config, and the field helpers the schemas are written with.

The schemas (``schema.py`` for pretraining, ``eval_schema.py`` for evaluation) are OmegaConf
structured configs (dataclasses): OmegaConf converts and type-checks the values, and field metadata
(``opt``) carries what it cannot express (allowed choices, numeric ranges, keys of several types).
``validate(cfg, Schema)`` runs before anything is built or written and turns every problem into a
``ConfigError`` naming the full key: an unknown key (with the closest known one), a value of the
wrong type or outside its range, a missing required key. The defaults of the dataclasses are the
engine's defaults and the only ones: a validated config is complete. ``complete`` brings a config
written by an earlier release (a checkpoint's, a run's ``args.json``) up to the schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import sys
import typing
from dataclasses import field, fields, is_dataclass
from typing import Any, Callable, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError

Check = Callable[[Any, str], None]


def opt(default: Any = MISSING, *, choices: Optional[tuple] = None, ge: Optional[float] = None,
        gt: Optional[float] = None, le: Optional[float] = None, lt: Optional[float] = None,
        check: Optional[Check] = None, factory: Optional[Callable[[], Any]] = None,
        ignored: Optional[str] = None) -> Any:
    """A schema field: its default (``MISSING``: required) and what a valid value looks like.
    ``ignored``: a key solo-learn's configs carry that this engine does not use (why); setting it
    prints one notice line."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "check": check,
            "ignored": ignored}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def sub(cls: type) -> Any:
    """A nested section, filled with its defaults when the config leaves it out."""
    return field(default_factory=cls)


# ------------------------------------------------------------------------ values of several types
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_auto_or_bool(value: Any, key: str) -> None:
    if value != "auto" and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: use true, false or auto")


def check_auto_or_int(minimum: int) -> Check:
    def check(value: Any, key: str) -> None:
        if value == "auto":
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key}={value!r}: use auto or an integer of at least {minimum}")
    return check


def check_devices(value: Any, key: str) -> None:
    """Lightning's ``devices``: auto, a count, an id list or a comma string of ids."""
    if value in ("auto", -1, "-1"):
        return
    if isinstance(value, (list, ListConfig)):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                for v in value):
            raise ConfigError(f"{key}={list(value)!r}: a device list holds ids such as [0, 1]")
        return
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):
            return
        raise ConfigError(f"{key}={value!r}: use auto, a count such as 2 or ids such as [0, 1]")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r}: use auto, a count such as 2 or ids such as [0, 1]")


PRECISIONS = ("auto", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "bf16-true",
              "16-true", "64", "64-true")


def check_precision(value: Any, key: str) -> None:
    if str(value) not in PRECISIONS:
        raise ConfigError(f"{key}={value!r}: choose one of {list(PRECISIONS)}")


def check_limit(value: Any, key: str) -> None:
    """Lightning's ``limit_*_batches``: a batch count, or a fraction of the epoch."""
    if value is None:
        return
    if isinstance(value, bool) or not _number(value):
        raise ConfigError(f"{key}={value!r}: use a number of batches or a fraction in (0, 1]")
    if isinstance(value, int) and value < 0 or isinstance(value, float) and not 0 <= value <= 1:
        raise ConfigError(f"{key}={value!r}: use a number of batches or a fraction in (0, 1]")


def check_ratio(value: Any, key: str) -> None:
    """MixMask's ratio: a number in (0, 1) or a pair [low, high] drawn uniformly per batch."""
    if isinstance(value, (list, tuple, ListConfig)):
        if len(value) != 2 or not all(_number(v) for v in value):
            raise ConfigError(f"{key} must be a number or a pair [low, high]")
        lo, hi = float(value[0]), float(value[1])
        if lo > hi:
            raise ConfigError(f"{key}=[{lo}, {hi}]: the uniform bounds are reversed")
        if not (lo > 0 and hi < 1):
            raise ConfigError(f"{key}=[{lo}, {hi}] must lie inside (0, 1)")
        return
    if not _number(value):
        raise ConfigError(f"{key}={value!r} is not a number")
    if not 0 < float(value) < 1:
        raise ConfigError(f"{key}={value} must lie inside (0, 1)")


def check_verify(value: Any, key: str) -> None:
    if value not in ("none", "quick", "full") and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: use quick (every file opens and has an image "
                          "header), full (decode every image) or none")


def check_dir_path(value: Any, key: str) -> None:
    """A folder the run writes into: it may not exist yet, but it cannot be a file."""
    if value is not None and os.path.exists(str(value)) and not os.path.isdir(str(value)):
        raise ConfigError(f"{key}={value}: this is a file, not a folder")


# ---------------------------------------------------------------------------------- validation
def _hints(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(obj if isinstance(obj, type) else type(obj))


def _list_item_schema(tp: Any) -> Optional[type]:
    """The dataclass of a ``List[SomeDataclass]`` annotation, else None."""
    if typing.get_origin(tp) in (list, List):
        (item,) = typing.get_args(tp) or (None,)
        return item if is_dataclass(item) else None
    return None


def closest(name: str, known: list[str], path: str = "") -> str:
    """`` (did you mean 'path.key'?)`` for the known key nearest to a misspelt one, else ''."""
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not match:  # a different case, or a longer or shorter spelling (probability / prob)
        low = name.lower()
        match = [k for k in known if k.lower() == low] or [
            k for k in known if len(k) >= 3 and (low.startswith(k.lower())
                                                 or k.lower().startswith(low))]
    return f" (did you mean '{_join(path, match[0])}'?)" if match else ""


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_keys(user: Any, schema: type, path: str) -> Any:
    """Unknown keys and wrong shapes, with full paths; list items of a schema type are merged here
    (OmegaConf loses the list index in its messages)."""
    if not isinstance(user, dict):
        where = path or "the config"
        raise ConfigError(f"{where} must be a mapping of keys, got {user!r}")
    hints = _hints(schema)
    known = [f.name for f in fields(schema)]
    out = dict(user)
    for key, value in user.items():
        full = _join(path, key)
        if key not in hints:
            raise ConfigError(f"unknown key '{full}'" + closest(str(key), known, path))
        tp = hints[key]
        nested = tp if is_dataclass(tp) else None
        if nested is not None and value is not None:
            out[key] = _check_keys(value, nested, full)
        item = _list_item_schema(tp)
        if item is not None and value is not None:
            if not isinstance(value, list):
                raise ConfigError(f"{full} must be a list of {item.__name__} entries, got "
                                  f"{value!r}")
            out[key] = [_merge(_check_keys(v, item, _join(full, i)), item, _join(full, i))
                        for i, v in enumerate(value)]
    return out


def _describe_type(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    for t, name in names.items():
        if tp is t or t in typing.get_args(tp):
            return name
    return getattr(tp, "__name__", str(tp))


def _field_type(schema: type, dotted: str) -> Any:
    """The annotation of a dotted key of ``schema`` (None when it is not a plain field path)."""
    tp: Any = schema
    for part in dotted.split(".") if dotted else []:
        if not is_dataclass(tp):
            return None
        tp = _hints(tp).get(part)
    return None if tp is schema else tp


@functools.cache
def _template(schema: type) -> DictConfig:
    """The schema as a structured config, built once (``OmegaConf.merge`` copies it)."""
    return OmegaConf.structured(schema)


def _merge(user: dict, schema: type, path: str) -> DictConfig:
    try:
        return OmegaConf.merge(_template(schema), user)
    except OmegaConfBaseException as exc:
        key = _join(path, exc.full_key) if getattr(exc, "full_key", None) else path
        tp = _field_type(schema, str(exc.full_key or ""))
        value = OmegaConf.select(OmegaConf.create(user), str(exc.full_key), default=None) \
            if exc.full_key else None
        expected = f"expected {_describe_type(tp)}" if tp is not None else \
            str(exc).splitlines()[0]
        shown = f"={value!r}" if value is not None else ""
        raise ConfigError(f"{key}{shown}: {expected}") from None


#: the seeds every generator seeded from a config accepts (numpy's range)
SEED_MAX = 2 ** 32 - 1


_BOUNDS = (("ge", "at least", lambda v, b: v >= b), ("gt", "greater than", lambda v, b: v > b),
           ("le", "at most", lambda v, b: v <= b), ("lt", "less than", lambda v, b: v < b))


def _check_range(number: float, meta: Any, key: str) -> None:
    if not math.isfinite(number):
        raise ConfigError(f"{key}={number}: must be a finite number")
    for bound, word, ok in _BOUNDS:
        limit = meta.get(bound)
        if limit is not None and not ok(number, limit):
            shown = int(number) if number.is_integer() else number
            raise ConfigError(f"{key}={shown}: must be {word} {limit}")


def _check_values(cfg: Any, schema: type, path: str) -> None:
    """Choices, ranges and the checks of keys that take several types, from field metadata."""
    hints = _hints(schema)
    for f in fields(schema):
        value = cfg.get(f.name)
        key = _join(path, f.name)
        tp = hints[f.name]
        if is_dataclass(tp) and value is not None:
            _check_values(value, tp, key)
            continue
        item = _list_item_schema(tp)
        if item is not None and value is not None:
            for i, v in enumerate(value):
                _check_values(v, item, _join(key, i))
            continue
        meta = f.metadata
        if value is None or not meta:
            continue
        if meta.get("ignored"):
            print(f"notice: {key}={value} is ignored ({meta['ignored']})", file=sys.stderr)
            continue
        if meta.get("check"):
            meta["check"](value, key)
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}={value!r}: choose one of {[c for c in choices if c]}")
        if _number(value):
            _check_range(float(value), meta, key)


def validate(cfg: Any, schema: type, path: str = "") -> DictConfig:
    """``cfg`` checked against ``schema`` and completed with its defaults (see the module
    docstring). Interpolations are resolved first; the result is an unlocked DictConfig."""
    try:
        node = cfg if isinstance(cfg, (DictConfig, ListConfig)) else OmegaConf.create(cfg or {})
        user = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot read the config: {str(exc).splitlines()[0]}") from None
    merged = _merge(_check_keys(user if user is not None else {}, schema, path), schema, path)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"missing required key '{_join(path, missing[0])}'")
    _check_values(merged, schema, path)
    OmegaConf.set_struct(merged, False)
    return merged


def _known_keys(stored: Any, schema: type) -> Any:
    """``stored`` without the keys ``schema`` does not have (list items of a schema type too)."""
    if not isinstance(stored, dict):
        return stored
    hints = _hints(schema)
    out = {}
    for key, value in stored.items():
        if key not in hints:
            continue
        tp, item = hints[key], _list_item_schema(hints[key])
        if is_dataclass(tp):
            value = _known_keys(value, tp)
        elif item is not None and isinstance(value, list):
            value = [_known_keys(v, item) for v in value]
        out[key] = value
    return out


def complete(stored: Any, schema: type) -> DictConfig:
    """A config written by an earlier parse (a checkpoint's ``cfg``, a run's ``args.json``) with
    the keys ``schema`` has gained since at their defaults, and the keys it has lost dropped. No
    checks run: it was valid when it was written. Unlocked, like ``validate``'s result."""
    plain = OmegaConf.to_container(stored, resolve=True) if isinstance(stored, DictConfig) \
        else dict(stored or {})
    known = _known_keys(plain, schema)
    hints = _hints(schema)
    for key, value in list(known.items()):  # list items are completed by their own schema
        item = _list_item_schema(hints[key])
        if item is not None and isinstance(value, list):
            known[key] = [OmegaConf.merge(_template(item), v) for v in value]
    merged = OmegaConf.merge(_template(schema), known)
    OmegaConf.set_struct(merged, False)
    return merged


def field_default(schema: type, name: str) -> Any:
    """The default of one field of a schema, for configs this package does not validate
    (solo-learn's own) that may lack the key."""
    (f,) = [f for f in fields(schema) if f.name == name]
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a schema (documentation and tests)."""
    keys = []
    for f in fields(schema):
        tp = _hints(schema)[f.name]
        key = _join(prefix, f.name)
        if is_dataclass(tp):
            keys += schema_keys(tp, key)
        else:
            keys.append(key)
    return keys
