"""The outbox: a domain event's row, as one more item of the transaction that writes its fact.

Written only if absent, so the transaction of a fact whose event is already there fails on this item:
the fact was committed before (its natural key, hence its event id, is the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.domain_events import DomainEvent
from chalicelib.items import Item, outbox_item

if TYPE_CHECKING:
    from chalicelib.storage.table import Table


def outbox_put(table: Table, event: DomainEvent) -> Item:
    """The TransactWriteItems item that writes `event`'s outbox row."""
    return {
        "Put": {
            "TableName": table.name,
            "Item": outbox_item(event),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }
