"""The facts VOD reports about an uploaded file, defined once.

Both notification parsers produce a `MediaFacts`; the stored video embeds it; the repository encodes
and decodes it, and the API shapes it, from the same field list (`FACTS`). Adding a fact is a field here
and a line in the parser that reads it from VOD. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


def _named(api: str, stored: str | None = None) -> Any:
    """A fact whose name in the API (and, unless `stored` says otherwise, in the table) is `api`."""
    return field(default=None, metadata={"api": api, "stored": stored or api})


@dataclass(frozen=True)
class MediaFacts:
    name: str | None = _named("name")
    media_url: str | None = _named("mediaUrl")
    cover_url: str | None = _named("coverUrl")
    media_type: str | None = _named("type", stored="mediaType")
    size: int | None = _named("size")
    duration: float | None = _named("duration")
    width: int | None = _named("width")
    height: int | None = _named("height")
    md5: str | None = _named("md5")
    storage_region: str | None = _named("storageRegion")
    class_id: int | None = _named("classId")
    vod_create_time: str | None = _named("vodCreateTime")


Kind = Literal["str", "int", "float"]


@dataclass(frozen=True)
class Fact:
    attribute: str  # the MediaFacts field
    api: str  # its name in API responses
    stored: str  # its attribute name in the table
    kind: Kind


def _facts() -> tuple[Fact, ...]:
    hints = typing.get_type_hints(MediaFacts)
    kinds: dict[Any, Kind] = {str | None: "str", int | None: "int", float | None: "float"}
    return tuple(
        Fact(f.name, f.metadata["api"], f.metadata["stored"], kinds[hints[f.name]])
        for f in dataclasses.fields(MediaFacts)
    )


FACTS = _facts()


def api_fields(facts: MediaFacts) -> dict[str, Any]:
    return {fact.api: getattr(facts, fact.attribute) for fact in FACTS}
