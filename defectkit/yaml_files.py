"""YAML as a person writes it, and nothing more: safe types only (``yaml.SafeLoader``), no aliases
(a 1 KB "billion laughs" of nested aliases expands to gigabytes) and no duplicate keys (the later
one would silently win)."""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError


class StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConstructorError(None, None, "aliases (*name) are not allowed here; write the value out", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """Parse ``text``; raises ``yaml.YAMLError`` on bad syntax, an alias or a duplicate key."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
