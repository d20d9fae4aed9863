"""Typed configuration: a dataclass is the schema, a (YAML) mapping the values.

Every entry point (``kcrl train``, each ``kcrl bench`` suite) has one config dataclass whose
documented fields are the schema. :func:`from_mapping` builds it from a mapping of overrides:

- nested dataclass fields (``trainer: PRConfig``, ``mle: MLEArgs``, ...) take a mapping that is
  merged into the field's current value (its default, or ``base``'s), so ``{"trainer":
  {"iterations": 200}}`` changes one number and keeps the rest of that default;
- lists become tuples where the field is a tuple (or a ``Sequence``), and lists of dataclasses
  (``list[SB3Setting]``) are built item by item; a list replaces the old value whole;
- ints are accepted for floats (and, since PyYAML reads ``3e-3`` as a string, so are strings
  that spell a number);
- an unknown key is rejected with its dotted path, a close name and the known ones; a value of the
  wrong type with the expected type and what arrived;
- a value outside its field's :class:`Range` (bounds, finiteness, choices; declared once per field
  with :func:`ranged`, or in a table such as :data:`PR_RANGES` passed to :func:`check_ranges`) is
  rejected with the allowed range, the value and the default.

:func:`load_yaml` also refuses a key written twice in one mapping and a file that is not UTF-8.

:func:`to_mapping` is the inverse: plain dicts, lists and scalars that ``yaml.safe_dump`` writes
and :func:`from_mapping` reads back to an equal config.

>>> from kcrl.benchmarks.tabular_joint import TabularJointConfig
>>> config = from_mapping(TabularJointConfig, {"seeds": 2, "variants": ["base", "learned"], "trainer": {"iterations": 200}})
>>> config.seeds, config.variants, config.trainer.iterations, config.trainer.samples
(2, ('base', 'learned'), 200, 4096)
>>> from_mapping(TabularJointConfig, to_mapping(config)) == config
True
>>> from_mapping(TabularJointConfig, {"trainer": {"iteratons": 5}})
Traceback (most recent call last):
    ...
kcrl.errors.ConfigError: unknown config key 'trainer.iteratons'. Did you mean 'iterations'? Known keys of trainer (PRConfig): ...
>>> from_mapping(TabularJointConfig, {"seeds": "three"})
Traceback (most recent call last):
    ...
kcrl.errors.ConfigError: config key 'seeds' must be int; got 'three' (str).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import math
import numbers
import reprlib
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

from kcrl.errors import ConfigError, did_you_mean

T = TypeVar("T")

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a dataclass (its annotations may be strings)."""
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _type_name(tp: Any) -> str:
    """How a field type reads in a message: ``int``, ``a list of int``, ``a mapping (PRConfig)``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if tp in (tuple, list) or origin in (tuple, list, Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} items ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if tp is dict or origin in (dict, Mapping):
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _wrong_type(path: str, tp: Any, value: Any) -> ConfigError:
    error = ConfigError(f"config key {path!r} must be {_type_name(tp)}; got {_repr.repr(value)} ({type(value).__name__}).")
    error.key_path = path  # which value was of the wrong type (the union case below re-words it)
    return error


def _convert(tp: Any, value: Any, path: str, current: Any = None) -> Any:
    """``value`` checked against the field type ``tp`` (and converted: list -> tuple, int -> float)."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own errors inside the value (e.g. an unknown nested key)
            try:
                return _convert(options[0], value, path, current)
            except ConfigError as exc:
                if getattr(exc, "key_path", None) == path:  # the value itself: say "X or null"
                    raise _wrong_type(path, tp, value) from None
                raise
        for option in options:
            try:
                return _convert(option, value, path, current)
            except ConfigError:
                continue
        raise _wrong_type(path, tp, value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # already built (a config made in Python)
            return value
        if not isinstance(value, Mapping):
            raise _wrong_type(path, tp, value)
        return from_mapping(tp, value, path, current if isinstance(current, tp) else None)
    if tp in (tuple, list) or origin in (tuple, list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(path, tp, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"config key {path!r} must be {_type_name(tp)}; got {len(value)} item(s): {_repr.repr(value)}."
                )
            items = [_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item = args[0] if args else Any
            items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if tp is list or origin is list else tuple(items)
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _wrong_type(path, tp, value)
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return {_convert(key_type, k, f"{path}[{k!r}]"): _convert(value_type, v, _path(path, k)) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise _wrong_type(path, tp, value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong_type(path, tp, value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, tp, value)
        return value
    if tp is float:
        if isinstance(value, bool):
            raise _wrong_type(path, tp, value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 (PyYAML) reads 3e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _wrong_type(path, tp, value)
    if tp is type(None):
        if value is not None:
            raise _wrong_type(path, tp, value)
        return None
    if isinstance(tp, type) and issubclass(tp, PurePath) and isinstance(value, str):
        return tp(value)
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise _wrong_type(path, tp, value)
        return value
    return value  # a typing construct this loader does not check


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str = "", base: T | None = None) -> T:
    """The dataclass ``cls`` built from ``values``, on top of ``base`` (default: ``cls``'s defaults).

    ``where`` is the dotted path of ``values`` inside a larger config (it prefixes the keys named
    in errors). ``base`` is not modified. Raises :class:`~kcrl.errors.ConfigError` for an unknown
    key, a value of the wrong type or a missing required field; a config's own checks
    (``__post_init__``) raise their own errors.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_mapping needs a dataclass type; got {cls!r}.")
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}; got {type(base).__name__}.")
    if not isinstance(values, Mapping):
        if where:
            raise _wrong_type(where, cls, values)
        raise ConfigError(f"a {cls.__name__} is built from a mapping of keys to values; got {type(values).__name__}.")
    known = _init_fields(cls)
    for key in values:
        if key not in known:
            names = sorted(known)
            scope = f"{where} ({cls.__name__})" if where else cls.__name__
            raise ConfigError(
                f"unknown config key {_path(where, key)!r}.{did_you_mean(str(key), names)} "
                f"Known keys of {scope}: {', '.join(names)}."
            )
    hints = _hints(cls)
    if base is None:
        required = [name for name, f in known.items() if not _has_default(f)]
        for name in required:
            if name not in values:
                raise ConfigError(f"config key {_path(where, name)!r} is required ({cls.__name__} has no default for it).")
        converted = {name: _convert(hints[name], values[name], _path(where, name)) for name in required}
        with _range_path(where):
            base = cls(**converted)
        values = {k: v for k, v in values.items() if k not in required}
    else:
        base = copy.deepcopy(base)
    changes = {key: _convert(hints[key], value, _path(where, key), getattr(base, key)) for key, value in values.items()}
    if not changes:
        return base
    with _range_path(where):
        return dataclasses.replace(base, **changes)


def _plain(value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), _path(path, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)):
                raise ConfigError(f"config key {_path(path, k)!r}: YAML keys must be strings or numbers; got {type(k).__name__}.")
            out[k] = _plain(v, _path(path, k))
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    raise ConfigError(
        f"config key {path!r} holds a {type(value).__name__} ({_repr.repr(value)}), which a YAML config cannot "
        "hold; use a string, number, bool, list or mapping."
    )


def to_mapping(obj: Any) -> dict[str, Any]:
    """A config dataclass (or a mapping) as plain, YAML-safe dicts, lists and scalars.

    The inverse of :func:`from_mapping`: ``from_mapping(type(c), to_mapping(c)) == c``.
    """
    if not ((dataclasses.is_dataclass(obj) and not isinstance(obj, type)) or isinstance(obj, Mapping)):
        raise TypeError(f"to_mapping needs a dataclass instance or a mapping; got {type(obj).__name__}.")
    return _plain(obj, "")


def _has_mapping(items: list) -> bool:
    return any(isinstance(x, dict) or (isinstance(x, list) and _has_mapping(x)) for x in items)


@functools.cache
def _dumper() -> type:
    """``yaml.SafeDumper`` that writes lists without mappings inline: ``sizes: [[1024, 4, 4, 128]]``."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_list(dumper, data):
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=not _has_mapping(data))

    Dumper.add_representer(list, represent_list)
    return Dumper


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass's fields (the string literal under each field),
    one line each, inherited ones included; ``{}`` where the source cannot be read.

    >>> from kcrl.trainer import PRConfig
    >>> field_docs(PRConfig)["variant"]
    'one of learned, mstep, binary_d, fixed, base'
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for field_node, doc_node in zip(body, body[1:]):
            if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                    and isinstance(doc_node, ast.Expr) and isinstance(doc_node.value, ast.Constant)
                    and isinstance(doc_node.value.value, str)):
                docs[field_node.target.id] = " ".join(doc_node.value.value.split())
    return docs


def _commented_lines(obj: Any, indent: str, width: int) -> list[str]:
    """YAML lines of a dataclass instance, each field preceded by its docstring as a comment."""
    import yaml

    docs, lines = field_docs(type(obj)), []
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        if f.name in docs:
            lines += textwrap.wrap(docs[f.name], width=max(40, width - len(indent)), initial_indent=f"{indent}# ",
                                   subsequent_indent=f"{indent}# ", break_on_hyphens=False)
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            lines.append(f"{indent}{f.name}:")
            lines += _commented_lines(value, indent + "  ", width)
        else:
            text = yaml.dump({f.name: _plain(value, f.name)}, Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=120)
            lines += [indent + line for line in text.splitlines()]
    return lines


def dump_yaml(obj: Any, comments: bool = False) -> str:
    """A config (dataclass or mapping) as YAML text, fields in their declared order.

    With ``comments=True`` (a dataclass only) each field is preceded by its documentation as a
    ``#`` comment, e.g. for ``kcrl bench SUITE --print-config``; the YAML reads back the same.
    """
    import yaml

    if comments and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return "\n".join(_commented_lines(obj, "", 100)) + "\n"
    return yaml.dump(to_mapping(obj), Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=120)


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """The parsed contents of a YAML file (``None`` if empty); errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8."
        ) from None
    try:
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{what} {str(path)!r}: {exc}") from None


@functools.cache
def _unique_key_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                mark = key_node.start_mark
                key, line = self.construct_object(key_node, deep=True), f"line {mark.line + 1} column {mark.column + 1}"
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise ConfigError(
                        f"key {key!r} appears twice in one mapping ({first} and {line}); YAML would "
                        "silently keep the last one. Keep one of them."
                    )
                seen[key] = line
            return super().construct_mapping(node, deep)

    return Loader


# ---------------------------------------------------------------------- value ranges
class RangeError(ConfigError):
    """A config value outside its field's :class:`Range` (a :class:`~kcrl.errors.ConfigError`)."""

    def __init__(self, key: str, requirement: str, value: Any, hint: str = "", label: str = "config key") -> None:
        self.key, self.requirement, self.value, self.hint, self.label = key, requirement, value, hint, label
        super().__init__(f"{label} {key!r} must be {requirement}; got {_repr.repr(value)}.{hint}")

    def at(self, where: str) -> "RangeError":
        """The same error, its key prefixed by ``where`` (the dotted path of the enclosing config)."""
        return RangeError(_path(where, self.key), self.requirement, self.value, self.hint, self.label)


class _range_path:
    """Context manager: a :class:`RangeError` raised inside names its key under ``where``."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if self.where and isinstance(exc, RangeError) and not getattr(exc, "_placed", False):
            placed = exc.at(self.where)
            placed._placed = True
            raise placed from None
        return False


def _bound(x: float) -> str:
    if isinstance(x, int) and abs(x) >= 2**20 and (x & (x - 1)) == 0:
        return f"2**{x.bit_length() - 1}"
    return repr(x)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a config field accepts: bounds (``ge``, ``gt``, ``le``, ``lt``), finiteness (numbers
    are finite unless ``finite=False``) and ``choices``. ``None`` passes (optional fields); a list or
    tuple is checked item by item.

    >>> Range(gt=0).check(0.05, "generator_lr")
    >>> Range(gt=0).check(float("nan"), "generator_lr")
    Traceback (most recent call last):
        ...
    kcrl.config.RangeError: config key 'generator_lr' must be a finite number > 0; got nan.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    choices: tuple | None = None
    integer: bool | None = None
    """whether messages say "an integer" (default: when the field's default is an int)"""

    def describe(self, integer: bool = False) -> str:
        """The allowed values in words (``"an integer >= 1"``, ``"a finite number > 0"``)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = f">= {_bound(self.ge)}" if self.ge is not None else f"> {_bound(self.gt)}" if self.gt is not None else None
        high = f"<= {_bound(self.le)}" if self.le is not None else f"< {_bound(self.lt)}" if self.lt is not None else None
        kind = "an integer" if integer else "a finite number" if self.finite else "a number"
        return " ".join([kind, " and ".join(b for b in (low, high) if b)]) if low or high else kind

    def allows(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, (list, tuple)):
            return all(self.allows(v) for v in value)
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return True  # the type check is from_mapping's
        if not isinstance(value, numbers.Integral):
            if math.isnan(value) or (self.finite and not math.isfinite(value)):
                return False
        return not ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                    or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))

    def check(self, value: Any, key: str, default: Any = dataclasses.MISSING, label: str = "config key") -> None:
        """Raise :class:`RangeError` naming ``key`` (a ``label``, e.g. ``"config key"``) when ``value``
        is out of range."""
        if self.allows(value):
            return
        hint = "" if default is dataclasses.MISSING or default is None else f" The default is {default!r}."
        sample = default[0] if isinstance(default, (list, tuple)) and default else default
        integer = self.integer if self.integer is not None else isinstance(sample, int) and not isinstance(sample, bool)
        what = self.describe(integer)
        if isinstance(value, (list, tuple)):
            what = f"a list of items each {what}"
        raise RangeError(key, what, value, hint, label)


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A dataclass field with a :class:`Range` (``bounds``: its arguments) in its metadata; the
    dataclass's ``__post_init__`` calls :func:`check_ranges`.

    >>> @dataclasses.dataclass
    ... class Args:
    ...     lr: float = ranged(3e-3, gt=0)
    ...     def __post_init__(self):
    ...         check_ranges(self)
    >>> Args(lr=-1.0)
    Traceback (most recent call last):
        ...
    kcrl.config.RangeError: config key 'lr' must be a finite number > 0; got -1.0. The default is 0.003.
    """
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"range": Range(**bounds)})


def field_range(cls: type, name: str) -> Range | None:
    """The :class:`Range` declared on field ``name`` of the dataclass ``cls`` (or ``None``)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("range")
    return None


def check_ranges(obj: Any, ranges: Mapping[str, Range] | None = None) -> None:
    """Check every field of the dataclass instance ``obj`` against its declared :class:`Range`
    (field metadata, see :func:`ranged`) or the one in ``ranges`` (for dataclasses declared
    elsewhere); raises :class:`RangeError` for the first value out of range."""
    ranges = ranges or {}
    for f in dataclasses.fields(obj):
        r = ranges.get(f.name) or f.metadata.get("range")
        if r is not None:
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            r.check(getattr(obj, f.name), f.name, default)


def check_values(values: Mapping[str, Any], ranges: Mapping[str, Range], where: str = "",
                 label: str = "config key") -> None:
    """Check keyword arguments (e.g. an env's) against a table of :class:`Range`; the key named in
    an error is prefixed by ``where`` and called ``label``."""
    for key, value in values.items():
        r = ranges.get(key)
        if r is not None:
            r.check(value, _path(where, key), label=label)


SEED_RANGE = Range(ge=0, lt=2**63, integer=True)
"""Seeds: integers that fit torch's and NumPy's generators, with room for per-stream offsets."""

PR_RANGES: dict[str, Range] = {
    "iterations": Range(ge=1),
    "alpha": Range(gt=0),
    "lam": Range(ge=0),
    "mle_weight": Range(ge=0),
    "samples": Range(ge=1),
    "contexts": Range(ge=1),
    "samples_per_context": Range(ge=1),
    "pad_id": Range(ge=0),
    "data_batch": Range(ge=1),
    "constraint_steps": Range(ge=1),
    "generator_lr": Range(ge=0),
    "constraint_lr": Range(ge=0),
    "ess_warn_fraction": Range(ge=0, le=1),
    "checkpoint_every": Range(ge=0),
    "eval_every": Range(ge=1),
    "seed": SEED_RANGE,
}
"""Value ranges of :class:`kcrl.trainer.PRConfig`'s fields (it is declared in the trainer)."""

MLE_RANGES: dict[str, Range] = {
    "epochs": Range(ge=0),
    "batch_size": Range(ge=1),
    "lr": Range(ge=0),
    "final_lr_fraction": Range(ge=0, le=1),
    "max_grad_norm": Range(gt=0),
    "eval_every": Range(ge=1),
    "patience": Range(ge=0),
    "seed": SEED_RANGE,
}
"""Value ranges of :class:`kcrl.models.lstm_generator.MLEArgs`'s fields."""
