"""The outbox pipe of infra/events.json, read from the template and applied to local stream records: the same
filter (its FilterCriteria, matched by moto's EventBridge pattern matcher) and the same target transform (its
InputTemplate, DetailType path and Source) that AWS applies in the cloud (docs/events.md, Delivery).

How a placeholder is filled is this module's model of EventBridge Pipes, from AWS's documentation (what is
verified and what is not is in docs/events.md): inside quotes a value is inserted as string content, escaped;
without quotes a value is inserted as JSON, and a string that holds a JSON object or array (the outbox row's
`data`) as that JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moto.events.models import EventPattern

EVENTS_TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "events.json"
# `"<$.path>"` (a placeholder inside quotes) or `<$.path>`; reserved variables (`<aws.pipes.…>`) are not used.
PLACEHOLDER = re.compile(r'"<(\$[^<>"]*)>"|<(\$[^<>"]*)>')


class Unrenderable(ValueError):
    """A record the pipe's target transform cannot turn into an event (AWS would retry it, then dead-letter it)."""


@dataclass(frozen=True)
class OutboxPipe:
    patterns: tuple[EventPattern, ...]
    input_template: str
    source: str
    detail_type: str  # a JSON path into the record (`$.…`), or a fixed value
    batch_size: int

    @classmethod
    def from_template(cls, app_name: str, stage: str, path: Path = EVENTS_TEMPLATE) -> OutboxPipe:
        properties = json.loads(path.read_text())["Resources"]["OutboxPipe"]["Properties"]
        source_parameters = properties["SourceParameters"]
        target = properties["TargetParameters"]
        bus = target["EventBridgeEventBusParameters"]
        names = {"AppName": app_name, "Stage": stage}
        return cls(
            patterns=tuple(EventPattern.load(f["Pattern"]) for f in source_parameters["FilterCriteria"]["Filters"]),
            input_template=target["InputTemplate"],
            source=_substituted(bus["Source"], names),
            detail_type=bus["DetailType"],
            batch_size=int(source_parameters["DynamoDBStreamParameters"]["BatchSize"]),
        )

    def passes(self, record: Mapping[str, Any]) -> bool:
        """The pipe's filter: a record passes when any pattern matches it."""
        event: Any = as_sent(record)  # moto's matcher is typed for its own event type; it reads any JSON object
        return any(pattern.matches_event(event) for pattern in self.patterns)

    def entry(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What the pipe puts on the bus for `record`: Source, DetailType and the Detail (the envelope)."""
        record = as_sent(record)
        try:
            detail = json.loads(PLACEHOLDER.sub(lambda match: _filled(match, record), self.input_template))
        except ValueError as error:
            raise Unrenderable(f"the input template does not make JSON of this record: {error}") from None
        detail_type = self.detail_type
        if detail_type.startswith("$."):
            detail_type = _at(record, detail_type)
        if not isinstance(detail_type, str) or not isinstance(detail, dict):
            raise Unrenderable("the record gives no string DetailType, or the detail is not a JSON object")
        return {"Source": self.source, "DetailType": detail_type, "Detail": detail}


def as_sent(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the stream sends it in JSON: boto3 turns ApproximateCreationDateTime (epoch seconds) into
    a datetime."""
    sent: dict[str, Any] = json.loads(json.dumps(record, default=_epoch_seconds))
    return sent


def _epoch_seconds(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    raise TypeError(f"{type(value).__name__} is not in a stream record")


def _filled(match: re.Match[str], record: Mapping[str, Any]) -> str:
    quoted, bare = match.groups()
    if quoted is not None:
        value = _at(record, quoted)
        text = value if isinstance(value, str) else json.dumps(value)
        return json.dumps(text)
    value = _at(record, bare)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return json.dumps(value)
        if isinstance(parsed, dict | list):
            return json.dumps(parsed, separators=(",", ":"))
    return json.dumps(value)


def _at(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for step in path.removeprefix("$.").split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise Unrenderable(f"the record has nothing at {path}")
    return value


def _substituted(value: Any, names: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return value
    return re.sub(r"\$\{(\w+)\}", lambda match: names[match.group(1)], value["Fn::Sub"])
