"""Run settings declared once: each field of a run configuration carries its flag (help, group, metavar,
parser, choices, the subcommands that take it), and the command line is generated from those declarations.

A field declared with :func:`setting` has its name, type and default in the dataclass and the rest in a
:class:`Flag`; :func:`options` turns the fields of a dataclass into :class:`Option` values, which
:func:`add_arguments` adds to an ``argparse`` parser and :func:`settings_from` reads back. Flags default to
None on the command line, so that a flag not given falls through to the preset's recipe and then to the
dataclass default (:func:`memopt.harness.train.config.make_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: the subcommands that train: ``memopt train`` and ``memopt compare``
RUN_COMMANDS = ("train", "compare")

_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def count(text: str) -> int:
    """Parse a token count such as ``500000``, ``200k``, ``1.3B``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgKMBG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; use e.g. 500000, 200k, 1.3B")
    return int(float(match.group(1)) * _SUFFIXES.get(match.group(2).lower(), 1))


def duration(text: str) -> float:
    """Parse a wall time such as ``90``, ``90s``, ``5m``, ``1.5h`` into seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhSMH]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 90, 90s, 5m, 1.5h")
    return float(match.group(1)) * _SECONDS.get(match.group(2).lower() or "s", 1)


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line.

    Attributes:
        help: what it does (the default is appended by :meth:`Option.help_text`).
        group: the help section: ``"model"``, ``"data"``, ``"optimizer"`` or ``"run"``.
        metavar: the value's placeholder, e.g. ``"N"``.
        parse: turns the flag's text into the value (default: the field's type).
        choices: the valid values; argparse rejects others, and the configuration checks them too.
        commands: the subcommands that take the flag.
        default_text: how the help states the default, when the field's default does not say it.
        repeat: the flag may be given several times; the values form a list.
    """

    help: str
    group: str = "run"
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    commands: tuple[str, ...] = RUN_COMMANDS
    default_text: str | None = None
    repeat: bool = False


def setting(default: Any, *, flag: Flag) -> Any:
    """A dataclass field with its default and its command-line :class:`Flag`."""
    return dataclasses.field(default=default, metadata={"flag": flag})


@dataclass(frozen=True)
class Option:
    """One flag: the setting it fills (``dest``), its value type and default, and its :class:`Flag`."""

    dest: str
    type: type
    default: Any
    flag: Flag

    @property
    def name(self) -> str:
        """The flag as typed, e.g. ``--grad-accum``."""
        return "--" + self.dest.replace("_", "-")

    def help_text(self, recipe_keys: Iterable[str] = ()) -> str:
        """The help line, with the default: the recipe's where a preset sets it, else the declared one."""
        if self.flag.default_text is not None:
            default = self.flag.default_text
        elif self.default is None or self.default is False or self.flag.repeat:
            default = "the preset's recipe" if self.dest in set(recipe_keys) else ""
        else:
            default = str(self.default)
            if self.dest in set(recipe_keys):
                default = f"the preset's recipe, else {default}"
        return f"{self.flag.help} (default: {default})" if default else self.flag.help

    def add_to(self, group: argparse._ArgumentGroup, recipe_keys: Iterable[str] = ()) -> None:
        """Add the flag to an argparse parser or group."""
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help_text(recipe_keys).replace("%", "%%")}
        if self.type is bool:
            group.add_argument(self.name, action="store_true", default=None, **kwargs)
            return
        kwargs.update(
            type=self.flag.parse or self.type, default=[] if self.flag.repeat else None, metavar=self.flag.metavar
        )
        if self.flag.choices is not None:
            kwargs["choices"] = self.flag.choices
        group.add_argument(self.name, action="append" if self.flag.repeat else "store", **kwargs)


def options(config_class: type, command: str) -> list[Option]:
    """The flags of ``config_class``'s fields that ``command`` takes, in field order."""
    hints = typing.get_type_hints(config_class)
    found = []
    for field in dataclasses.fields(config_class):
        flag = field.metadata.get("flag")
        if flag is None or command not in flag.commands:
            continue
        default = None if field.default is dataclasses.MISSING else field.default
        found.append(Option(field.name, _value_type(hints[field.name]), default, flag))
    return found


def _value_type(hint: Any) -> type:
    """``int`` for ``int`` and ``int | None``; the one non-None type of a hint."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def add_arguments(parser: argparse.ArgumentParser, flags: Iterable[Option], recipe_keys: Iterable[str] = ()) -> None:
    """Add ``flags`` to ``parser``, in help sections by :attr:`Flag.group` (first seen, first shown)."""
    recipe_keys = set(recipe_keys)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in flags:
        if option.flag.group not in groups:
            groups[option.flag.group] = parser.add_argument_group(option.flag.group)
        option.add_to(groups[option.flag.group], recipe_keys)


def settings_from(args: argparse.Namespace, flags: Iterable[Option]) -> dict[str, Any]:
    """The parsed values of ``flags`` by setting name (None where a flag was not given)."""
    return {option.dest: getattr(args, option.dest) for option in flags}
