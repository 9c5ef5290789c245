"""Config overrides checked against their config file before anything runs.

One check for the sweep (each grid point's FIELD=VALUE) and the training CLI (each --config.FIELD flag): a
field the config lacks fails at once, naming the field, the closest valid name and the valid fields at that
level, instead of ml_collections' AttributeError traceback (CLI) or a failed run per grid point (sweep).
The flag values both commands read (an override's text, --runs_per_program) are parsed here, below both.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import re
from collections.abc import Iterable, Sequence
from pathlib import Path


def load_config(config: str):
    """The ConfigDict of a config file given as path[:arg], as --config would load it."""
    path, _, arg = config.partition(":")
    spec = importlib.util.spec_from_file_location("_checked_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def flag_value(value: object) -> str:
    """An override as ml_collections parses it from --config.FIELD=VALUE: strings as given, others by repr."""
    return value if isinstance(value, str) else repr(value)


def runs_per_program(text: str) -> int | None:
    """The --runs_per_program flag: a positive integer, or "auto" (None: as many runs as the devices' memory holds)."""
    if text == "auto":
        return None
    if not text.strip().lstrip("+").isdigit() or int(text) < 1:
        raise ValueError(
            f"--runs_per_program={text}: must be a positive integer (1: one run per program), or auto "
            f"(as many runs of one structure as the devices' memory holds)"
        )
    return int(text)


def _closest(part: str, names: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
    return close[0] if close else None


def missing_field(root, field: str) -> tuple[str, str | None] | None:
    """None if the dotted `field` names a field of `root`; else why not ("no field 'pol' in model.options;
    valid fields there: pool") and the closest valid field ("model.options.pool"), if one is close."""
    node, parts = root, field.split(".")
    for i, part in enumerate(parts):
        name = part.split("[", 1)[0]  # ml_collections also takes an element of a sequence field: name[i]
        if hasattr(node, "keys") and name in node:
            node = node[name]
            if name != part:  # below an element, leave the rest to ml_collections' own parser
                return None
            continue
        where = ".".join(parts[:i]) or "the top level"
        if not hasattr(node, "keys"):
            return f"no field {part!r} in {where}; valid fields there: none ({where} is a value, not a section)", None
        names = sorted(node.keys())
        near = _closest(name, names)
        return (
            f"no field {part!r} in {where}; valid fields there: {', '.join(names)}",
            ".".join([*parts[:i], near]) if near else None,
        )
    return None


def check_fields(config: str, fields: Iterable[str], *, spelling: str = "{!r}", context: str = "override ") -> None:
    """Raise ValueError for the first field the config file `config` (path[:arg]) lacks. `spelling` writes a
    field as the user wrote it: "{!r}" for a sweep's FIELD=VALUE, "--config.{}" for the training CLI."""
    root = load_config(config)
    for field in dict.fromkeys(fields):
        problem = missing_field(root, field)
        if problem:
            reason, near = problem
            suggestion = f"\ndid you mean {spelling.format(near)}?" if near else ""
            raise ValueError(f"{context}{spelling.format(field)}: {config} has {reason}{suggestion}")


def cli_overrides(argv: Sequence[str], flag: str = "config") -> tuple[str | None, list[str]]:
    """The config file and the overridden fields of an absl command line, found as ml_collections finds them:
    --FLAG=PATH or --FLAG PATH, then --FLAG.FIELD=VALUE, --FLAG.FIELD VALUE or --[no]FLAG.FIELD (booleans)."""
    config, fields = None, []
    for i, arg in enumerate(argv):
        if re.fullmatch(rf"--?{flag}(=.*)?", arg, re.DOTALL):
            config = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
        elif match := re.match(rf"--?(no)?{flag}\.([^=]+)", arg):
            fields.append(match.group(2))
    return config, fields


def check_cli(argv: Sequence[str], flag: str = "config") -> None:
    """Raise ValueError if a --FLAG.FIELD override names a field the --FLAG config file lacks. A command line
    without a readable config file passes: absl and ml_collections report that themselves."""
    config, fields = cli_overrides(argv, flag)
    if config and fields and Path(config.partition(":")[0]).is_file():
        check_fields(config, fields, spelling=f"--{flag}.{{}}", context="")


def with_overrides(config, overrides: Sequence[tuple[str, str]]):
    """A copy of the ConfigDict `config` with each (FIELD, VALUE) applied as --config.FIELD=VALUE would apply it
    (VALUE parsed by the field's type, e.g. "(2, 4)" for a tuple); a field `config` lacks raises ValueError
    naming the closest valid one, a value of the wrong type raises ValueError naming it."""
    from absl import flags
    from ml_collections import config_flags

    for field, _ in overrides:
        problem = missing_field(config, field)
        if problem:
            reason, near = problem
            raise ValueError(
                f"override {field!r}: the config has {reason}" + (f"\ndid you mean {near!r}?" if near else "")
            )
    argv = ["config", *(f"--config.{field}={value}" for field, value in overrides)]
    parsed = flags.FlagValues()
    try:
        # A deep copy keeps placeholders (`config_dict.placeholder(int)`): their type is how a None field parses.
        config_flags.DEFINE_config_dict("config", copy.deepcopy(config), flag_values=parsed, sys_argv=argv)
        parsed(argv)
    except flags.Error as err:
        raise ValueError(str(err)) from None
    return parsed.config
