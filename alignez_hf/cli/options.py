"""Command-line options generated from option dataclasses, so that a default and its help text exist once.

A field becomes ``--field-name`` (``metadata["flag"]`` renames it) with ``metadata["help"]`` and its default:

- ``bool``: ``store_true`` when the default is False or None, ``--x/--no-x`` when it is True;
  ``metadata["negative_flag"]`` names the flag that sets it False instead (``--sample/--greedy``, with
  ``metadata["negative_help"]``);
- ``int``, ``float``, ``str`` (or ``X | None``): parsed as that type;
- ``tuple[X, X]``, ``tuple[X, ...]``, ``list[X]``: comma-separated values (``0.33,0.67``);
- ``metadata["parse"]``: a callable from text to value (its ValueError becomes a usage error);
- ``metadata["choices"]``: the allowed values; ``metadata["metavar"]``: the value's name in ``--help``;
- ``metadata["nargs"]`` / ``metadata["const"]``: argparse's, e.g. ``"?"`` for a flag whose value is optional;
- ``metadata["unset"]``: what a None default means, shown as the default in ``--help``.

Imports only the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

_SCALARS = (int, float, str)


def flag_of(f: dataclasses.Field) -> str:
    """The option string of a field: ``--batch-size`` for ``batch_size``."""
    return "--" + f.metadata.get("flag", f.name).replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its ``default_factory``)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"Option field {f.name!r} has no default.")


def help_default(f: dataclasses.Field) -> str:
    """The default a field's ``--help`` shows: its value, or ``metadata["unset"]`` (what None means) for None."""
    value = default_of(f)
    if value is None and "unset" in f.metadata:
        return f.metadata["unset"]
    return default_text(value)


def default_text(value: Any) -> str:
    """How a default is shown in ``--help``: ``8``, ``0.7``, ``on``/``off``, ``0,0.5,1`` or ``None``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(default_text(v) for v in value)
    return str(value)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _usage_errors(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Wrap ``parse`` so that its ValueError message reaches the user as argparse's usage error."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    wrapped.__name__ = name
    return wrapped


def _sequence_parser(tp: Any, name: str) -> tuple[Callable[[str], Any], str] | None:
    """A parser of comma-separated values for ``tuple[...]``/``list[...]`` types, with its metavar."""
    origin = typing.get_origin(tp)
    if origin not in (tuple, list):
        return None
    args = typing.get_args(tp)
    fixed = origin is tuple and args and args[-1] is not Ellipsis
    item = args[0] if args else str
    if item not in _SCALARS:
        raise TypeError(f"Option {name!r}: unsupported item type {item!r}.")

    def parse(text: str):
        try:
            values = [item(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated {item.__name__} values, got {text!r}") from None
        if fixed and len(values) != len(args):
            raise ValueError(f"expected {len(args)} comma-separated values, got {text!r}")
        return tuple(values) if origin is tuple else values

    metavar = ",".join(["X"] * len(args)) if fixed else "X,Y,..."
    return parse, metavar


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_cls: type,
    *,
    exclude: Iterable[str] = (),
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Add one option per field of the dataclass ``config_cls`` (see the module docstring for the mapping).

    ``overrides`` maps a field name to extra ``add_argument`` keywords (e.g. ``{"strategy": {"choices": [...]}}``).
    """
    hints = typing.get_type_hints(config_cls)
    overrides = overrides or {}
    for f in dataclasses.fields(config_cls):
        if f.name in exclude:
            continue
        default = default_of(f)
        tp = _strip_optional(hints[f.name])
        meta = f.metadata
        help_text = f"{meta.get('help', '')} (default: {help_default(f)})".strip().replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if tp is bool:
            if "negative_flag" in meta:
                group = parser.add_mutually_exclusive_group()
                group.add_argument(flag_of(f), action="store_true", **kwargs, **overrides.get(f.name, {}))
                negative = "--" + meta["negative_flag"].replace("_", "-")
                group.add_argument(
                    negative,
                    dest=f.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=meta.get("negative_help", f"Turns {flag_of(f)} off.").replace("%", "%%"),
                )
                continue
            kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        elif "parse" in meta:
            kwargs["type"] = _usage_errors(meta["parse"], f.name)
        elif (sequence := _sequence_parser(tp, f.name)) is not None:
            kwargs["type"], kwargs["metavar"] = _usage_errors(sequence[0], f.name), sequence[1]
        elif tp in _SCALARS:
            kwargs["type"] = tp
        else:
            raise TypeError(f"Option {f.name!r} of {config_cls.__name__}: give metadata['parse'] for type {tp!r}.")
        for key in ("choices", "metavar", "nargs", "const"):
            if key in meta:
                kwargs[key] = meta[key]
        kwargs.update(overrides.get(f.name, {}))
        action = parser.add_argument(flag_of(f), **kwargs)
        action.help = kwargs["help"]  # BooleanOptionalAction appends its own "(default: True)" on Python < 3.13


def config_from_args(config_cls: type, args: argparse.Namespace, **changes: Any) -> Any:
    """The ``config_cls`` instance that parsed ``args`` describe (fields absent from ``args`` keep defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    return config_cls(**{**values, **changes})
