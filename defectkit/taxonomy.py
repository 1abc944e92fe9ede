"""The two-level hierarchy (category -> subtypes) and the mapping of raw labels onto it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from defectkit.errors import TaxonomyError
from defectkit.yaml_files import load_yaml

BACKGROUND = "background"
UNCERTAIN = "uncertain"  # what the classifier calls a defect it is not sure of
UNSAFE_NAME_CHARACTERS = set('/\\:*?"<>|') | {chr(c) for c in range(32)}


def check_name(name: str, source: str, kind: str) -> None:
    """Category and subtype names become folder and file names: no separators, no ``..``."""
    if not name.strip() or name in (".", "..") or UNSAFE_NAME_CHARACTERS & set(name):
        raise TaxonomyError(f"{source}: {kind} name {name!r} cannot be a file name (empty, '.', '..', a path "
                            "separator or another of / \\ : * ? \" < > | or a control character); rename it")


@dataclass(frozen=True)
class Taxonomy:
    name: str
    categories: dict[str, list[str]]
    aliases: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self):
        categories = {str(c): [str(s) for s in subs] for c, subs in self.categories.items()}
        for category, subtypes in categories.items():
            check_name(category, self.source, "category")
            for subtype in subtypes:
                check_name(subtype, self.source, "subtype")
                if subtype == BACKGROUND and category != BACKGROUND:
                    raise TaxonomyError(f"{self.source}: 'background' is listed under category {category!r}; it is its "
                                        "own category (proposals that are not defects), leave it out")
        if BACKGROUND in categories and categories[BACKGROUND] != [BACKGROUND]:
            raise TaxonomyError(
                f"{self.source}: category 'background' must have the single subtype 'background', "
                f"found {categories[BACKGROUND]}"
            )
        categories[BACKGROUND] = [BACKGROUND]
        seen: dict[str, str] = {}
        for category, subtypes in categories.items():
            if not subtypes:
                raise TaxonomyError(f"{self.source}: category {category!r} has no subtypes")
            for subtype in subtypes:
                if subtype in seen and not (subtype == BACKGROUND and category == BACKGROUND):
                    raise TaxonomyError(
                        f"{self.source}: subtype {subtype!r} appears under both "
                        f"{seen[subtype]!r} and {category!r}"
                    )
                seen[subtype] = category
        for raw, target in self.aliases.items():
            if target not in seen:
                raise TaxonomyError(
                    f"{self.source}: alias {raw!r} maps to {target!r}, which is not a subtype "
                    f"(subtypes: {', '.join(sorted(seen))})"
                )
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "aliases", {str(k): str(v) for k, v in self.aliases.items()})

    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        path = Path(path)
        if not path.is_file():
            raise TaxonomyError(f"taxonomy file not found: {path}")
        try:
            data = load_yaml(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise TaxonomyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
        except OSError as exc:
            raise TaxonomyError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise TaxonomyError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
            raise TaxonomyError(f"{path}: expected a mapping with 'name', 'categories' and 'aliases'")
        for category, subtypes in data["categories"].items():
            if not isinstance(subtypes, list):
                raise TaxonomyError(f"{path}: category {category!r} must list its subtypes")
        if not isinstance(data.get("aliases") or {}, dict):
            raise TaxonomyError(f"{path}: 'aliases' must map raw labels to subtypes (label: subtype), "
                                f"not a {type(data['aliases']).__name__}")
        return cls(
            name=str(data.get("name", path.stem)),
            categories=data["categories"],
            aliases=data.get("aliases") or {},
            source=str(path),
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "categories": self.categories, "aliases": self.aliases}

    @property
    def subtypes(self) -> list[str]:
        return [s for subs in self.categories.values() for s in subs]

    def category_of(self, subtype: str, default: str | None = None) -> str:
        """The category of ``subtype``; an unknown subtype is an error, or ``default`` when given."""
        for category, subtypes in self.categories.items():
            if subtype in subtypes:
                return category
        if default is not None:
            return default
        raise TaxonomyError(f"{self.source}: {subtype!r} is not a subtype of taxonomy {self.name!r}")

    def resolve(self, raw_label: str) -> tuple[str, str]:
        """Map a raw label (folder, VOC or COCO class name) to (category, subtype)."""
        subtype = self._subtype_for(str(raw_label))
        if subtype is None:
            raise TaxonomyError(
                f"label {raw_label!r} is neither a subtype nor an alias in taxonomy {self.source}; "
                f"add it under 'aliases' (known: {', '.join(sorted(set(self.subtypes) | set(self.aliases)))})"
            )
        return self.category_of(subtype), subtype

    def _subtype_for(self, raw: str) -> str | None:
        if raw in self.aliases:
            return self.aliases[raw]
        if raw in self.subtypes:
            return raw
        folded = {k.casefold(): v for k, v in self.aliases.items()}
        folded.update({s.casefold(): s for s in self.subtypes})
        return folded.get(raw.casefold())
