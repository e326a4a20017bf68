"""Load YAML while remembering the line of every field, for error messages.

PyYAML builds the document; a walk over its node tree records, for each field path
(`("routes", 2, "match")`), the line where it starts, and refuses duplicate keys,
which plain YAML loading would silently merge.

What a policy never needs is refused before it can cost anything: control
characters, nesting deeper than `MAX_DEPTH`, more than `MAX_NODES` nodes, and anchors
and aliases (a few hundred bytes of nested aliases expand to billions of nodes). Every refusal is a
`YamlSyntaxError` with a line, never another exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent, CollectionStartEvent

FieldPath = tuple[str | int, ...]

MAX_DEPTH = 64
MAX_NODES = 50_000  # values, lists and mappings; a large policy has a few thousand
# What YAML 1.1 and JSON both refuse, plus what an editor would hide: C0 controls other
# than tab, LF and CR; DEL; C1 controls other than NEL; lone surrogates; the BOM inside.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


class YamlSyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)
    duplicates: tuple[tuple[FieldPath, int], ...] = ()

    def line_of(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            line = self.lines.get(probe)
            if line is not None:
                return line
            probe = probe[:-1]
        return self.lines.get((), 1)


class _PolicyLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, and with a depth limit
    checked before PyYAML's recursive composer could exhaust the stack."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(
                None, None, "YAML anchors and aliases are not allowed", _mark(event)
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise ComposerError(None, None, f"more than {MAX_NODES} YAML nodes", _mark(event))
        if isinstance(event, CollectionStartEvent):
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", _mark(event)
                )
        node = super().compose_node(parent, index)
        if isinstance(event, CollectionStartEvent):
            self._depth -= 1
        return node


def _mark(event: Any) -> yaml.error.Mark | None:
    mark = event.start_mark
    return mark if isinstance(mark, yaml.error.Mark) else None


def _control_character(text: str) -> YamlSyntaxError | None:
    found = _CONTROL.search(text)
    if found is None:
        return None
    line = text.count("\n", 0, found.start()) + 1
    return YamlSyntaxError(line, f"control character U+{ord(found.group()):04X} is not allowed")


def load_yaml(text: str) -> YamlDocument:
    problem = _control_character(text.removeprefix("\ufeff"))
    if problem is not None:
        raise problem
    loader = _PolicyLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, str(exc.problem or exc)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc)) from None
    except ValueError as exc:  # an integer longer than Python converts, for one
        raise YamlSyntaxError(1, f"unreadable value: {exc}") from None
    finally:
        loader.dispose()
    lines: dict[FieldPath, int] = {}
    duplicates: list[tuple[FieldPath, int]] = []
    if node is not None:
        _walk(node, (), lines, duplicates)
    return YamlDocument(data=data, lines=lines, duplicates=tuple(duplicates))


def _walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    duplicates: list[tuple[FieldPath, int]],
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                # YAML keeps the last value: point the line map at the one in effect.
                duplicates.append((child, key_node.start_mark.line + 1))
                for known in [p for p in lines if p[: len(child)] == child]:
                    del lines[known]
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, duplicates)
