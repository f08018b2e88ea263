"""Frozen dataclasses from YAML + `key=value` overrides.

Precedence (last wins): dataclass defaults < conf/<profile>.yaml < extra YAML files (--conf) < overrides.
An unknown key or a value of the wrong type is a `ConfigError` that names the full dotted key.
A string may refer to another key as `${section.key}` (resolved after every layer is merged, so an override
of the referenced key reaches every string that refers to it); `$${` is a literal `${`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check/convert one value against a type annotation (dataclass, Optional, tuple, dict, scalar)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {_type_name(tp)}")

    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value

    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))

    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = args if args else (Any, Any)
        return types.MappingProxyType(
            {_coerce(kt, k, f"{key}.{k}"): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
        )

    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) mapping; unknown keys are errors naming the dotted key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc


_REF = re.compile(r"\$(\$?)\{([^{}]*)\}")


def interpolate(tree: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve `${dotted.key}` in every string of `tree` against `tree` merged over `defaults`.

    A string that is exactly one reference takes the referenced value as is (any type); a reference inside
    a longer string is formatted into it. References may chain; a cycle, a reference to a key that does not
    exist, to a section (a mapping), or to a null value inside a longer string is a `ConfigError` naming both
    keys.
    """
    scope = deep_merge(defaults, tree)

    def lookup(ref: str, where: str, stack: tuple[str, ...]) -> Any:
        if ref in stack:
            raise ConfigError(f"{where}: reference cycle {' -> '.join((*stack, ref))}")
        node: Any = scope
        for part in ref.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{where}: '${{{ref}}}' refers to no config key")
            node = node[part]
        if isinstance(node, Mapping):
            raise ConfigError(f"{where}: '${{{ref}}}' is a section, not a value")
        return resolve(node, ref, (*stack, ref))

    def resolve(value: Any, where: str, stack: tuple[str, ...] = ()) -> Any:
        if isinstance(value, Mapping):
            return {k: resolve(v, f"{where}.{k}" if where else str(k), stack) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [resolve(v, f"{where}[{i}]", stack) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole and not whole.group(1):
            return lookup(whole.group(2).strip(), where, stack)

        def sub(m: re.Match) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            ref = m.group(2).strip()
            got = lookup(ref, where, stack)
            if got is None:  # never an empty piece of a path: say what to set
                raise ConfigError(f"{where}: '${{{ref}}}' is null here; set {ref}")
            return str(got)

        return _REF.sub(sub, value)

    return resolve(dict(tree), "")


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def _has_path(cls: type, dotted: str) -> bool:
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            return False
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return False
        tp = hints[part]
        # unwrap Optional[Dataclass]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = inner[0] if len(inner) == 1 else tp
    return True


def parse_overrides(overrides: Iterable[str], root_cls: type | None = None, stage: str | None = None) -> dict[str, Any]:
    """`a.b=1` strings -> nested dict; values are parsed as YAML scalars/lists (`x=[1,2]`, `y=null`).

    With `stage` (e.g. "train"), a key that is not a root key but is a key of that stage's section is
    taken relative to it, so `captionrec train model=sasrec` means `train.model=sasrec`.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{key}': cannot parse value {raw!r}: {exc}") from exc
        if root_cls is not None and stage and not _has_path(root_cls, key) and _has_path(root_cls, f"{stage}.{key}"):
            key = f"{stage}.{key}"
        _set_dotted(tree, key, value)
    return tree


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def to_plain(obj: Any) -> Any:
    """Dataclass tree -> plain dicts/lists (for YAML dumps, logging and MLflow params)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dataclass tree -> {'a.b.c': value} (lists joined with ',')."""
    plain = to_plain(obj) if not isinstance(obj, dict) else obj
    out: dict[str, Any] = {}
    for k, v in plain.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        elif isinstance(v, list):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = v
    return out
