"""YAML loading that remembers where every value came from.

Config errors must name the file and line of the offending key, and secrets come
from ``${VAR}`` / ``${VAR:-default}`` in the environment. PyYAML's node tree has
the marks; this module builds plain Python values from it together with a map
from each value's path to its line, and expands the environment on the way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

# A default may itself hold ${...}: the innermost expands first.
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")


@dataclass
class Source:
    """A parsed YAML document: values, the line of each path, and load problems."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    from_env: set[Path] = field(default_factory=set)
    unset: set[Path] = field(default_factory=set)  # values that name an unset variable (reported once, here)
    problems: list[str] = field(default_factory=list)
    built: int = 0  # values built so far (aliases expand: a 359-byte file can stand for billions)
    chars: int = 0  # characters of the text values built so far (``MAX_CHARS``)

    def at(self, path: Path, message: str) -> str:
        """A problem as ``FILE:LINE: dotted.path: message``."""
        return f"{self.file}:{self.line_of(path)}: {dotted(path)}: {message}"

    def line_of(self, path: Path) -> int:
        """Line of the longest prefix of ``path`` that exists in the document."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def locate(self, loc: tuple[Any, ...]) -> Path:
        """Map a validator's location onto the document, dropping parts it added.

        Pydantic inserts union tags (``v1``, ``function-after[...]``) into its
        locations; those are not keys of the file and are skipped.
        """
        path: list[str | int] = []
        node = self.data
        last = len(loc) - 1
        for i, part in enumerate(loc):
            if (isinstance(node, Mapping) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            ):
                path.append(part)
                node = node[part]
            elif isinstance(part, str) and (i < last or not isinstance(node, Mapping)):
                continue  # a union tag or validator name, not a key of the file
            else:
                path.append(part)
                node = None
        return tuple(path)


MAX_VALUES = 200_000  # a plant's configuration holds thousands; a billion-laughs file, billions
MAX_CHARS = 32 << 20  # text in all built values, ${VAR}s expanded: aliases of a long string add up
MAX_DEPTH = 32  # nesting: a configuration needs a handful of levels


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_yaml(file: str, text: str, environ: Mapping[str, str] | None = None) -> Source:
    env = os.environ if environ is None else environ
    source = Source(file=file, data=None)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:  # PyYAML composes nested collections recursively
        source.problems.append(f"{file}:1: (size): expected at most {MAX_DEPTH} nested levels, found far more")
        return source
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(err, "problem", None) or str(err)
        source.problems.append(f"{file}:{line}: (syntax): {problem}")
        return source
    if root is None:
        source.data = {}
        return source
    constructor = yaml.SafeLoader("")
    try:
        source.data = _build(root, (), source, constructor, env)
    except _TooLarge as err:
        source.problems.append(f"{file}:1: (size): expected {err}: refused")
        source.data = None
    except yaml.YAMLError as err:  # a tag or value PyYAML cannot construct (e.g. a bare '=')
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        source.problems.append(f"{file}:{line}: (syntax): {getattr(err, 'problem', None) or err}")
        source.data = None
    return source


class StandIns(dict[str, str]):
    """An environment in which a variable that is unset and has no default stands in as
    ``stand_in``: for commands that read what the daemon shows (``telemetry status``) and need
    none of the secrets only the daemon's own environment file holds."""

    def __init__(self, environ: Mapping[str, str], stand_in: str = "1") -> None:
        super().__init__(environ)
        self.stand_in = stand_in


class _TooLarge(Exception):
    """The document expands beyond ``MAX_VALUES``, ``MAX_CHARS`` or ``MAX_DEPTH``."""


def _build(node: yaml.Node, path: Path, src: Source, loader: yaml.SafeLoader, env: Mapping[str, str]) -> Any:
    src.built += 1
    if src.built > MAX_VALUES:
        raise _TooLarge(
            f"a configuration of at most {MAX_VALUES:,} values, found more (YAML aliases repeating a collection?)"
        )
    if len(path) > MAX_DEPTH:
        raise _TooLarge(f"at most {MAX_DEPTH} nested levels, found more at line {node.start_mark.line + 1}")
    src.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # never built: an alias key can be huge
                where = f"{src.file}:{key_node.start_mark.line + 1}: {dotted(path)}"
                src.problems.append(f"{where}: expected a text key, found a collection")
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                src.problems.append(
                    f"{src.file}:{key_node.start_mark.line + 1}: {dotted(path)}: "
                    f"expected a text key, found {type(key).__name__}"
                )
                continue
            child = (*path, key)
            if key in out:
                src.problems.append(
                    f"{src.file}:{key_node.start_mark.line + 1}: {dotted(child)}: "
                    f"duplicate key (first at line {src.lines[child]})"
                )
                continue
            src.lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, src, loader, env)
            src.lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), src, loader, env) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str):
        if "${" in value:
            src.from_env.add(path)
            value = _expand(value, path, src, env)
        src.chars += len(value)
        if src.chars > MAX_CHARS:
            raise _TooLarge(f"at most {MAX_CHARS:,} characters of values, found more (aliases of a long text?)")
    return value


def _expand(value: str, path: Path, src: Source, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found is not None and (found or default is None):
            return found
        if default is not None:
            return default
        if isinstance(env, StandIns):
            return env.stand_in
        src.unset.add(path)
        src.problems.append(
            f"{src.file}:{src.lines[path]}: {dotted(path)}: "
            f"environment variable {name} is not set and ${{{name}}} has no ':-default'"
        )
        return ""

    for _ in range(4):
        expanded = _ENV.sub(one, value)
        if expanded == value:
            break
        value = expanded
    return value
