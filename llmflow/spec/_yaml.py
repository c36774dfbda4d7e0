"""YAML reading with ruamel.yaml: plain data plus the position of every key and value."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from llmflow.errors import ConfigError, Diagnostic

NodePath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column; ``block`` is True for ``|``/``>`` scalars (content starts below)."""

    line: int
    col: int
    block: bool = False


@dataclass(slots=True)
class Positions:
    """Where each mapping key and each value of a YAML document stands."""

    keys: dict[NodePath, Position] = field(default_factory=dict)
    values: dict[NodePath, Position] = field(default_factory=dict)

    def value(self, path: NodePath) -> Position:
        """Position of the value at ``path``, or of its nearest existing ancestor."""
        return self._nearest(path, prefer_key=False)

    def key(self, path: NodePath) -> Position:
        """Position of the key that names ``path``, or of its nearest existing ancestor."""
        return self._nearest(path, prefer_key=True)

    def _nearest(self, path: NodePath, *, prefer_key: bool) -> Position:
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if prefix in first:
                return first[prefix]
            if prefix in second:
                return second[prefix]
        return Position(1, 1)


def dotted(path: NodePath) -> str:
    """``("steps", "a", "system", 1)`` → ``steps.a.system[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(path: Path, display: str) -> tuple[Any, Positions]:
    """Parse ``path``; a syntax error becomes a ConfigError naming ``display:line:col``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Diagnostic(display, 1, 1, "", f"cannot read file: {exc}")]) from exc
    yaml = YAML(typ="rt")
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            [Diagnostic(display, line, col, "", f"YAML syntax error: {problem}")]
        ) from exc
    except YAMLError as exc:
        raise ConfigError([Diagnostic(display, 1, 1, "", f"YAML syntax error: {exc}")]) from exc
    except Exception as exc:  # ruamel raises a few non-YAMLError types on hostile input
        raise ConfigError([Diagnostic(display, 1, 1, "", f"YAML syntax error: {exc}")]) from exc
    positions = Positions()
    return _plain(document, (), positions), positions


def _plain(node: Any, path: NodePath, positions: Positions) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key in node:
            child: NodePath = (*path, str(key))
            k_line, k_col = node.lc.key(key)
            v_line, v_col = node.lc.value(key)
            positions.keys[child] = Position(k_line + 1, k_col + 1)
            value = node[key]
            block = isinstance(value, LiteralScalarString | FoldedScalarString)
            positions.values[child] = Position(v_line + 1, v_col + 1, block)
            out[str(key)] = _plain(value, child, positions)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            block = isinstance(value, LiteralScalarString | FoldedScalarString)
            positions.values[(*path, index)] = Position(line + 1, col + 1, block)
            items.append(_plain(value, (*path, index), positions))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, _dt.date):
        return node.isoformat()
    return node
