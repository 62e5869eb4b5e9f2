"""Reading the settings file: strict UTF-8 YAML of bounded size, without aliases or implicit dates.

A settings file is small, hand-written text: anything else is refused with
the file, the place and the rule, never with a traceback or a message the
size of what a hostile file expands to. Dates stay text here so that the
settings object validates them like every other value (naming the key and
the value); aliases are refused because a few lines of nested aliases expand
to millions of nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_BYTES = 1_000_000  # a settings file is a few kB; a megabyte is a mistake or an attack
MAX_SHOWN = 200  # how much of a refused value an error message quotes


class SettingsFileError(ValueError):
    """The file itself cannot be read as settings (size, encoding, YAML, aliases)."""


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr, escaped to one line, at most MAX_SHOWN characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text):,} characters)"


def _loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader without aliases (refused) and without implicit timestamps (left as text)."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise SettingsFileError(
                    f"line {event.start_mark.line + 1}: YAML aliases (*{str(event.anchor)[:40]}) are not allowed in a settings file; "
                    "write the value out"
                )
            return super().compose_node(parent, index)

    StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictLoader.construct_yaml_str)
    return StrictLoader


def read_settings_file(path: Path) -> dict[str, Any]:
    """The mapping a settings file holds; SettingsFileError names the file and what is wrong with it."""
    import yaml

    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SettingsFileError(f"settings file {path} is {size:,} bytes; a settings file is at most {MAX_BYTES:,} bytes")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SettingsFileError(
            f"settings file {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    try:
        loaded = yaml.load(text, Loader=_loader())  # noqa: S506 (a SafeLoader subclass: no aliases, no timestamps)
    except SettingsFileError as exc:
        raise SettingsFileError(f"settings file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SettingsFileError(f"settings file {path} is not valid YAML{where}: {shown(str(problem))[1:-1]}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise SettingsFileError(f"settings file {path} must hold a mapping of settings, not {type(loaded).__name__}")
    return loaded or {}
