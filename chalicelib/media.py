"""The facts VOD reports about an uploaded file, defined once.

Both notification parsers produce a `MediaFacts`; the stored video embeds it; the repository encodes
and decodes it, and the API shapes it, from the same field list (`FACTS`). Adding a fact is a field here
and a line in the parser that reads it from VOD. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct, field
from msgspec.structs import fields

# The facts whose attribute name in the table is not their name in the API.
_STORED_AS = {"media_type": "mediaType"}


def _named(api: str) -> Any:
    """A fact whose name in the API (and, unless _STORED_AS says otherwise, in the table) is `api`."""
    return field(default=None, name=api)


class MediaFacts(Struct, frozen=True):
    name: str | None = _named("name")
    media_url: str | None = _named("mediaUrl")
    cover_url: str | None = _named("coverUrl")
    media_type: str | None = _named("type")
    size: int | None = _named("size")
    duration: float | None = _named("duration")
    width: int | None = _named("width")
    height: int | None = _named("height")
    md5: str | None = _named("md5")
    storage_region: str | None = _named("storageRegion")
    class_id: int | None = _named("classId")
    vod_create_time: str | None = _named("vodCreateTime")


Kind = Literal["str", "int", "float"]


class Fact(Struct, frozen=True):
    attribute: str  # the MediaFacts field
    api: str  # its name in API responses
    stored: str  # its attribute name in the table
    kind: Kind


def _facts() -> tuple[Fact, ...]:
    kinds: dict[Any, Kind] = {str | None: "str", int | None: "int", float | None: "float"}
    return tuple(
        Fact(f.name, f.encode_name, _STORED_AS.get(f.name, f.encode_name), kinds[f.type]) for f in fields(MediaFacts)
    )


FACTS = _facts()


def api_fields(facts: MediaFacts) -> dict[str, Any]:
    return {fact.api: getattr(facts, fact.attribute) for fact in FACTS}
