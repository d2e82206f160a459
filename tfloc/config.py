"""Typed configuration machinery (the Model Garden habit), and nothing else.

Each section's dataclass lives beside the code that owns it
(``tfloc.sim.config``, ``tfloc.data.config``, each model and method module);
the experiment root is :class:`tfloc.run.experiment.ExperimentConfig`. This module
only merges YAML overrides into such trees and checks them: unknown keys, wrong
types and out-of-range values raise :class:`ConfigError` with one line naming
the file and the key. It imports no model, method or scene module.

A :class:`OneOf` is a registry-backed choice (``model: {type: resnet, resnet:
{depth: 34}}``): the registry's entries carry their own option dataclasses.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import field
from typing import Any, List

import yaml

__all__ = ["ConfigError", "param", "OneOf", "merge", "validate_tree", "check_pair",
           "parse_override", "load_yaml_overrides", "to_dict", "dump_yaml"]


class ConfigError(ValueError):
    """A user mistake in a config file or override; the CLIs print it in one line."""


def param(default=dataclasses.MISSING, *, factory=None, min=None, max=None,
          choices=None, doc=""):
    """A dataclass field with validation metadata (range, choices, a one-line doc)."""
    meta = {"min": min, "max": max, "choices": choices, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class OneOf:
    """A choice among the entries of a :class:`tfloc.registry.Registry`.

    Subclasses set ``registry`` and ``default``. The chosen entry's option
    dataclass (registered with it, may be None) is reachable as
    ``choice.options`` and as ``choice.<type>`` (so ``cfg.model.resnet.depth``
    reads naturally). In YAML: ``{type: NAME, NAME: {...}}``, or just ``NAME``.
    """
    registry = None  # set by subclasses
    default: str = ""

    def __init__(self, type: str | None = None):
        self.type = type or self.default
        if self.type not in self.registry:
            raise ConfigError(f"unknown {self.registry.kind} '{self.type}' "
                              f"(registered: {', '.join(self.registry.names())})")
        options_cls = self.registry.config(self.type)
        self.options = options_cls() if options_cls is not None else None

    def __getattr__(self, name):
        # only reached for attributes not set in __init__
        if name != "options" and name == self.__dict__.get("type"):
            return self.__dict__["options"]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} "
                             f"(chosen: {self.__dict__.get('type')!r})")

    def __eq__(self, other):
        return type(self) is type(other) and (self.type, self.options) == (other.type, other.options)

    def __repr__(self):
        return f"{type(self).__name__}(type={self.type!r}, options={self.options!r})"


def _is_one_of(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, OneOf)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str, allow_nan: bool = False):
    """Checks ``value`` against the annotation ``tp``; returns the typed value. A float must
    be finite, except NaN where ``allow_nan`` (a field whose default NaN means "not set")."""
    origin = typing.get_origin(tp)
    if origin in (list, List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of {_type_name(item_tp)}, got {value!r}")
        if dataclasses.is_dataclass(item_tp):
            items = []
            for i, v in enumerate(value):
                item = item_tp()
                merge(item, v, f"{where}[{i}].")
                items.append(item)
            return items
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:   # a value whose type its use decides (e.g. a search space's choices)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 240e3 and 1e-3 as strings: accept what float() reads.
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        else:
            number = float(value)
        if not math.isfinite(number) and not (allow_nan and math.isnan(number)):
            # e.g. a NaN learning rate trains every epoch on NaN
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp} at {where}")


def _merge_one_of(current: OneOf, value, where: str) -> OneOf:
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a name or a mapping {{type: ..}}, got {value!r}")
    kind = type(current)
    new_type = value.get("type", current.type)
    if not isinstance(new_type, str):
        raise ConfigError(f"{where}.type: expected a string, got {new_type!r}")
    if new_type != current.type:
        try:
            current = kind(new_type)
        except ConfigError as e:
            raise ConfigError(f"{where}.type: {e}") from None
    for key, sub in value.items():
        if key == "type":
            continue
        if key != new_type or current.options is None:
            allowed = ["type"] + ([new_type] if current.options is not None else [])
            raise ConfigError(f"{where}.{key}: unknown key (allowed with type '{new_type}': "
                              f"{', '.join(allowed)})")
        merge(current.options, sub, f"{where}.{key}.")
    return current


def merge(obj, overrides: dict, prefix: str = ""):
    """Merges a mapping of overrides into the dataclass tree ``obj`` in place."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'top level'}: expected a mapping, got {overrides!r}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    names = set(fields)
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            merge(getattr(obj, key), value, where + ".")
        elif _is_one_of(tp):
            setattr(obj, key, _merge_one_of(getattr(obj, key), value, where))
        else:
            default = fields[key].default
            unset = isinstance(default, float) and math.isnan(default)   # NaN: "not set"
            setattr(obj, key, _coerce(value, tp, where, allow_nan=unset))


def validate_tree(obj, prefix: str = ""):
    """Range/choice checks of every field, then each dataclass's own ``validate()``.

    A section dataclass may define ``validate(self)`` for cross-field checks; it
    raises ConfigError with keys relative to itself, and the prefix is added here.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{prefix}{f.name}"
        if isinstance(value, OneOf):
            if value.options is not None:
                validate_tree(value.options, f"{where}.{value.type}.")
            continue
        if dataclasses.is_dataclass(value):
            validate_tree(value, where + ".")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, v in enumerate(value):
                validate_tree(v, f"{where}[{i}].")
            continue
        meta = f.metadata
        items = value if isinstance(value, list) else [value]
        items = [u for v in items for u in (v if isinstance(v, list) else [v])]
        for v in items:
            if meta.get("min") is not None and v < meta["min"]:
                raise ConfigError(f"{where}: {v!r} is below the minimum {meta['min']}")
            if meta.get("max") is not None and v > meta["max"]:
                raise ConfigError(f"{where}: {v!r} is above the maximum {meta['max']}")
            if meta.get("choices") is not None and v not in meta["choices"]:
                raise ConfigError(f"{where}: {v!r} is not one of {meta['choices']}")
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None


def check_pair(value, where, *, positive=False):
    """``value`` is ``[low, high]`` with ``low <= high`` (``<`` if ``positive``)."""
    if len(value) != 2:
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    if value[1] < value[0]:
        raise ConfigError(f"{where}: range {value!r} is negative (high < low)")
    if positive and value[1] == value[0]:
        raise ConfigError(f"{where}: range {value!r} is empty")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. training.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def load_yaml_overrides(path: str, _seen=()) -> list[tuple[str, dict]]:
    """The override mappings of a YAML file, its ``base:`` chain first.

    ``base: other.yaml`` (relative to the file) lets experiment files share a
    dataset section instead of copying it. Returns [(file, mapping), ...].
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    if os.path.abspath(path) in _seen:
        raise ConfigError(f"{path}: 'base' includes itself")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:      # not the full default job in disguise
        raise ConfigError(f"{path}: the config file is empty (expected a mapping of config keys, "
                          "e.g. a copy of configs/hda.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    base = data.pop("base", None)
    chain = []
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
        chain = load_yaml_overrides(os.path.join(os.path.dirname(path), base),
                                    _seen + (os.path.abspath(path),))
    return chain + [(path, data)]


def to_dict(cfg) -> dict:
    """The config tree as plain dicts/lists (one-ofs as ``{type: .., <type>: {..}}``)."""
    if isinstance(cfg, OneOf):
        out = {"type": cfg.type}
        if cfg.options is not None:
            out[cfg.type] = to_dict(cfg.options)
        return out
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    return cfg


def dump_yaml(cfg, path: str):
    """Writes the resolved config atomically."""
    from tfloc.utils import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
