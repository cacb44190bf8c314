"""Click options built from config dataclasses, with real types, ranges and registry choices.

Every setting of a config class (``core.config.setting``) becomes one ``--flag``: integers and
floats as ``IntRange``/``FloatRange`` (floats also accept fractions such as ``8/255``), names from a
registry as a ``Choice`` whose values are read from the registry when asked (so plugins appear in
help and completion), lists as comma-separated values, booleans as ``--x/--no-x``. Optional
settings accept ``none``. Bad values are refused with the same one-line messages as TOML values.
:class:`SectionedCommand` prints the options grouped by config section. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click

from ..core.config import (
    CLEARED,
    check_value,
    choices_of,
    flag_name,
    iter_settings,
    parse_cli_value,
    unwrap_optional,
)
from ..core.errors import UserError

_NONE_WORDS = ("none", "null")
SECTION_TITLES = {
    "data": "Data",
    "model": "Model",
    "train": "Training",
    "eval": "Evaluation",
    "prune": "Pruning and rewinding",
}


class _SettingType:
    """Mixin: convert with the setting's own parser and range check (one-line errors)."""

    def __init__(self, f: dataclasses.Field, tp: Any, optional: bool) -> None:
        self.field, self.tp, self.optional = f, tp, optional
        if isinstance(self, click.IntRange | click.FloatRange):
            meta = f.metadata
            low, high, low_open = meta.get("low"), meta.get("high"), bool(meta.get("low_open"))
            super().__init__(min=low, max=high, min_open=low_open)  # type: ignore[call-arg]

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        if self.optional and value.strip().lower() in _NONE_WORDS:
            return CLEARED
        parsed = parse_cli_value(value, self.tp, self.field.name)
        for v in parsed if isinstance(parsed, tuple) else (parsed,):
            check_value(self.field, v)
        return parsed


class IntSetting(_SettingType, click.IntRange):
    """An integer setting with its declared range."""


class FloatSetting(_SettingType, click.FloatRange):
    """A float setting with its declared range; fractions such as 8/255 are accepted."""


class ListSetting(_SettingType, click.ParamType):
    """A comma-separated list setting."""

    name = "list"

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return f"{type_label(typing.get_args(self.tp)[0])},..."


class RegistryChoice(click.Choice):
    """A choice among names a function returns when asked (a registry's, plugins included).

    ``what`` names the value in errors ("attack", "control"); ``flag`` is the option.
    """

    def __init__(self, names: Callable[[], Iterable[str]], what: str, flag: str) -> None:
        self._names, self.what, self.flag = names, what, flag
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ never runs; nothing to store
        pass

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value in self.choices:
            return value
        raise UserError(
            f"unknown {self.what} '{value}' for --{self.flag}; choose one of: "
            f"{', '.join(self.choices)}"
        )


class NameList(RegistryChoice):
    """Comma-separated names, each one of a registry's."""

    name = "names"

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "[" + "|".join(self.choices) + "],..."

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, tuple):
            return value
        return tuple(super(NameList, self).convert(v.strip(), param, ctx)
                     for v in str(value).split(",") if v.strip())  # fmt: skip


class SettingChoice(RegistryChoice):
    """A string setting restricted to its declared choices (a registry's names)."""

    def __init__(self, f: dataclasses.Field) -> None:
        super().__init__(lambda: choices_of(f) or (), f.name.replace("_", " "), flag_name(f.name))


def type_label(tp: Any) -> str:
    return {int: "INTEGER", float: "FLOAT", str: "TEXT"}.get(tp, "VALUE")


def _param_type(f: dataclasses.Field, tp: Any) -> click.ParamType:
    inner, optional = unwrap_optional(tp)
    if choices_of(f) is not None and f.metadata.get("choices") is not None:
        return SettingChoice(f)
    if inner is int:
        return IntSetting(f, inner, optional)
    if inner is float:
        return FloatSetting(f, inner, optional)
    if typing.get_origin(inner) is tuple:
        return ListSetting(f, inner, optional)
    return click.STRING


def _default_text(default: Any) -> str:
    if default is None:
        return "none"
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default) or "none"
    return str(default)


def config_options(cls: type) -> Callable[[Callable], Callable]:
    """Decorator adding one option per setting of config class ``cls`` (default None: not given).

    Each option remembers its config section (``option.section``) for :class:`SectionedCommand`.
    """

    def decorate(fn: Callable) -> Callable:
        for key, f, tp in reversed(list(iter_settings(cls))):
            inner, optional = unwrap_optional(tp)
            help_text = f"{f.metadata.get('help', '')} [default: {_default_text(f.default)}]"
            flag = flag_name(f.name)
            if inner is bool:
                decl = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=help_text)
            else:
                decl = click.option(
                    f"--{flag}", f.name, type=_param_type(f, tp), default=None, help=help_text
                )
            fn = decl(fn)
            fn.__click_params__[-1].section = key.split(".")[0] if "." in key else None
        return fn

    return decorate


class SectionedCommand(click.Command):
    """A command whose help lists options under their config sections (Data, Model, ...)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str | None, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                groups.setdefault(getattr(param, "section", None), []).append(record)
        for section, rows in groups.items():
            title = (
                "Options" if section is None else f"{SECTION_TITLES.get(section, section)} options"
            )
            with formatter.section(title):
                formatter.write_dl(rows)


def _flag_of(param: Any) -> str:
    return max(getattr(param, "opts", None) or ["--value"], key=len)


class Int(click.IntRange):
    """A whole number with a lower bound, refused in our one-line style (``--x must be >= 1``)."""

    def __init__(self, low: int, high: int | None = None) -> None:
        super().__init__(min=low, max=high)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                raise UserError(f"{_flag_of(param)} expects int, got '{value}'") from None
        if number < self.min:
            raise UserError(f"{_flag_of(param)} must be >= {self.min}, got {number}")
        if self.max is not None and number > self.max:
            raise UserError(f"{_flag_of(param)} must be <= {self.max}, got {number}")
        return number


class Fraction(click.FloatRange):
    """A float in [low, high] that may be written as a fraction (``8/255``)."""

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__(min=low, max=high)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from ..core.config import parse_float

        if isinstance(value, float):
            number = value
        else:
            try:
                number = parse_float(str(value))
            except (ValueError, ZeroDivisionError):
                raise UserError(
                    f"{_flag_of(param)} expects a number such as 8/255, got '{value}'"
                ) from None
        if not self.min <= number <= self.max:  # also refuses NaN
            raise UserError(
                f"{_flag_of(param)} must lie in [{self.min:g}, {self.max:g}], got {number}"
            )
        return number


def config_file_option(fn: Callable) -> Callable:
    """``--config FILE``: a TOML file of settings; flags given on the command line override it."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(),
        default=None,
        help="TOML file of settings (flags override it).",
    )(fn)


def out_dir_option(default: str | None, what: str) -> Callable[[Callable], Callable]:
    """``--out DIR``: where the command writes (``what`` says what goes there)."""
    return click.option(
        "--out",
        type=click.Path(file_okay=False),
        default=default,
        show_default=default is not None,
        help=what,
    )


def dir_option(flag: str, what: str, *, default: str | None = None, required: bool = False) -> Any:
    """``--<flag> DIR``: a directory option (``what`` is its help)."""
    return click.option(
        f"--{flag}", type=click.Path(file_okay=False), default=default, required=required,
        show_default=default is not None, help=what,
    )  # fmt: skip


def sectioned_command(name: str, short_help: str) -> Callable[[Callable], click.Command]:
    """``@click.command`` for a command taking a config class's options, shown by section."""
    return click.command(name, cls=SectionedCommand, short_help=short_help)


def threads_option(fn: Callable) -> Callable:
    """``--threads N``: torch CPU threads (1 is often much faster on a shared machine)."""
    return click.option(
        "--threads",
        type=Int(1),
        default=None,
        help="CPU threads for torch [default: torch's, one per core]. On a machine shared with "
        "other jobs, 1 can be much faster: idle-waiting threads stall when a core is taken.",
    )(fn)


def nproc_option(fn: Callable) -> Callable:
    """``--nproc N``: this command as N ranks of one DDP process group (through torchrun)."""
    return click.option(
        "--nproc",
        type=Int(1),
        default=None,
        help="Train with N processes (one per GPU; on the CPU, gloo ranks) in one DDP group, "
        "started through torch.distributed.run; --batch-size is the global batch, split over "
        "them [default: 1]. Or start the command with torchrun yourself.",
    )(fn)


def json_option(fn: Callable) -> Callable:
    """``--json``: print the result as JSON on stdout (for piping)."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)
