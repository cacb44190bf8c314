"""Typed dataclass configs: defaults with help text, TOML loading, CLI overrides, stable hashing.

A config is a (frozen) dataclass whose fields are declared with :func:`setting`. Nested dataclasses form
sections (``[data]``, ``[model]``, ... in TOML); field names are unique across sections so that every
setting is one flat CLI flag (``--epochs``, ``--dataset``; built by ``cli.options``). The hash of a
config covers only the settings that differ from their defaults, so adding a new setting with a default
never changes existing run hashes (the idea of open_lth's run descriptions).

A setting's ``choices`` may be a function returning names: the registries of each axis
(``core.registry``) fill them when they are needed, not when a config class is defined.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import UserError

T = TypeVar("T")


#: The largest seed torch.manual_seed takes (larger ones fail after files are written).
MAX_SEED = 2**63 - 1


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    hashed: bool = True,
) -> Any:
    """Declare a config field with its default, help text and allowed range.

    ``low``/``high`` bound numbers (``low_open`` makes the lower bound strict); ``choices`` restricts
    strings (a tuple, or a function returning the names of a registry); ``hashed=False`` keeps a
    setting that does not change results (paths, progress bars) out of the run hash.
    """
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "hashed": hashed,
    }
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults so configs stay immutable")
    return dataclasses.field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The allowed values of setting ``f`` (None: any), resolving a registry's name function."""
    choices = f.metadata.get("choices")
    if callable(choices):
        return tuple(choices())
    return choices


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(inner type, True)`` for ``X | None``; ``(tp, False)`` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (int, float, str, bool, tuples, Optional)."""
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"config key '{key}' may not be empty (expected {type_name(inner)})")
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif inner is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif inner is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        if isinstance(value, list | tuple):
            elem = args[0]
            return tuple(_coerce(v, elem, key) for v in value)
    else:  # pragma: no cover - programming error, not user input
        raise TypeError(f"unsupported config type {inner!r} for {key}")
    raise UserError(
        f"config key '{key}' expects {type_name(inner)}, got {type(value).__name__} {value!r}"
    )


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def iter_settings(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield ``(dotted_key, field, type)`` for every leaf setting of config class ``cls``."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            yield from iter_settings(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Validate every leaf against the ``choices``/``low``/``high`` declared with :func:`setting`."""
    hints = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _is_section(hints[f.name]):
            check_ranges(value, f"{prefix}{f.name}.")
            continue
        for v in value if isinstance(value, tuple) else (value,):
            check_value(f, v)


def check_value(f: dataclasses.Field, v: Any) -> None:
    """Raise a one-line UserError unless ``v`` fits setting ``f``'s choices and range."""
    if v is None or isinstance(v, bool):
        return
    meta = f.metadata
    if isinstance(v, float) and not math.isfinite(v):
        raise UserError(f"--{flag_name(f.name)} must be a finite number, got {v}")
    choices = choices_of(f)
    if choices and v not in choices:
        raise UserError(
            f"unknown {f.name.replace('_', ' ')} '{v}' for --{flag_name(f.name)}; "
            f"choose one of: {', '.join(choices)}"
        )
    low, high = meta.get("low"), meta.get("high")
    if isinstance(v, int | float):
        if low is not None and (v < low or (meta.get("low_open") and v == low)):
            op = ">" if meta.get("low_open") else ">="
            raise UserError(f"--{flag_name(f.name)} must be {op} {low}, got {v}")
        if high is not None and v > high:
            raise UserError(f"--{flag_name(f.name)} must be <= {high}, got {v}")


def flag_name(name: str) -> str:
    """The CLI flag of setting ``name`` without dashes: ``train_eps`` -> ``train-eps``."""
    return name.replace("_", "-")


def from_dict(cls: type[T], data: dict[str, Any], *, base: T | None = None, source: str = "") -> T:
    """Build ``cls`` from a nested dict (TOML layout), starting from ``base`` (default: defaults).

    Unknown sections or keys and wrong types raise :class:`UserError` naming the key and the valid ones.
    """
    where = f" in {source}" if source else ""
    obj = base if base is not None else cls()
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(
                f"unknown config key '{key}'{where}; valid keys: {', '.join(sorted(names))}"
            )
        tp = hints[key]
        if _is_section(tp):
            if not isinstance(value, dict):
                raise UserError(f"config key '{key}'{where} must be a [{key}] table")
            changes[key] = from_dict(tp, value, base=getattr(obj, key), source=source)
        else:
            changes[key] = _coerce(value, tp, key)
    return dataclasses.replace(obj, **changes)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict; unreadable or malformed files raise a one-line UserError."""
    from .storage import check_regular

    p = Path(path)
    check_regular(p, "config file")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {p} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {p} is not valid TOML: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {p}: {exc.strerror}") from None


def apply_flat(cfg: T, overrides: dict[str, Any]) -> T:
    """Return ``cfg`` with flat ``{field_name: value}`` overrides applied wherever the field lives."""
    if not overrides:
        return cfg
    hints = _field_types(type(cfg))
    changes: dict[str, Any] = {}
    remaining = dict(overrides)
    for f in dataclasses.fields(cfg):
        tp = hints[f.name]
        if _is_section(tp):
            sub = getattr(cfg, f.name)
            sub_names = {k for k, _, _ in iter_settings(tp)}
            mine = {k: remaining.pop(k) for k in list(remaining) if k in sub_names}
            if mine:
                changes[f.name] = apply_flat(sub, mine)
        elif f.name in remaining:
            changes[f.name] = _coerce(remaining.pop(f.name), tp, f.name)
    if remaining:
        raise UserError(f"unknown setting(s): {', '.join(sorted(remaining))}")
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict view (tuples become lists), the layout of hparams.json and TOML."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def non_default(cfg: Any) -> dict[str, Any]:
    """Flat ``{dotted_key: value}`` of hashed settings that differ from the class defaults."""
    default = type(cfg)()
    out: dict[str, Any] = {}

    def walk(a: Any, b: Any, prefix: str) -> None:
        hints = _field_types(type(a))
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if _is_section(hints[f.name]):
                walk(va, vb, f"{prefix}{f.name}.")
            elif f.metadata.get("hashed", True) and va != vb:
                out[f"{prefix}{f.name}"] = list(va) if isinstance(va, tuple) else va

    walk(cfg, default, "")
    return out


def config_hash(cfg: Any, extra: dict[str, Any] | None = None) -> str:
    """10-hex-digit SHA-256 of the non-default settings (plus ``extra``, e.g. a ticket's id)."""
    payload = {"kind": type(cfg).__name__, **non_default(cfg), **(extra or {})}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def parse_cli_value(text: str | bool, tp: Any, name: str) -> Any:
    """Convert a CLI string to the field type; 'none' clears an optional setting."""
    if isinstance(text, bool):
        return text
    inner, optional = unwrap_optional(tp)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if inner is int:
            return int(text)
        if inner is float:
            return parse_float(text)
        if typing.get_origin(inner) is tuple:
            elem = typing.get_args(inner)[0]
            parts = [p for p in text.split(",") if p.strip()]
            return tuple(parse_cli_value(p.strip(), elem, name) for p in parts)
        return text
    except (ValueError, ZeroDivisionError):
        raise UserError(f"--{flag_name(name)} expects {type_name(inner)}, got '{text}'") from None


def parse_float(text: str) -> float:
    """A float, also written as a fraction: ``"8/255"`` (eps is naturally written so)."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


class _Cleared:
    """The value of an optional flag given as ``none``: clears what the TOML file set."""

    def __repr__(self) -> str:
        return "CLEARED"


CLEARED: Any = _Cleared()


def build_config(
    cls: type[T],
    *,
    config_path: str | Path | None,
    cli_values: dict[str, Any],
    inherited: dict[str, Any] | None = None,
) -> T:
    """Defaults <- ``inherited`` (a nested dict, e.g. a ticket's data and model sections) <- TOML
    file (if given) <- CLI flags that were given; then range-check.

    ``cli_values`` maps setting names to values: None means "not given"; :data:`CLEARED` means the
    flag was given as ``none``; strings are parsed with :func:`parse_cli_value` (the CLI's
    parameter types hand over values already parsed).
    """
    cfg = cls()
    if inherited:
        cfg = from_dict(cls, inherited, base=cfg)
    if config_path is not None:
        cfg = from_dict(cls, load_toml(config_path), base=cfg, source=str(config_path))
    types_by_name = {key.rsplit(".", 1)[-1]: tp for key, _, tp in iter_settings(cls)}
    given = {}
    for k, v in cli_values.items():
        if v is None or k not in types_by_name:
            continue
        if v is CLEARED:
            given[k] = None
        elif isinstance(v, str) and types_by_name[k] is not str:
            given[k] = parse_cli_value(v, types_by_name[k], k)
        else:
            given[k] = v
    cfg = apply_flat(cfg, given)
    check_ranges(cfg)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg
