"""The local table is created from infra/data.json, the template CloudFormation deploys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEMPLATE = json.loads((Path(__file__).resolve().parent.parent / "infra" / "data.json").read_text())


def test_template_has_the_production_safeguards() -> None:
    table = TEMPLATE["Resources"]["Table"]
    assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert [k["AttributeName"] for k in properties["KeySchema"]] == ["pk", "sk"]


def test_local_table_matches_the_template(dynamodb: Any, table_name: str) -> None:
    properties = TEMPLATE["Resources"]["Table"]["Properties"]
    described = dynamodb.describe_table(TableName=table_name)["Table"]
    assert described["KeySchema"] == properties["KeySchema"]
    assert sorted(described["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == sorted(
        properties["AttributeDefinitions"], key=lambda a: a["AttributeName"]
    )
    [index] = described["GlobalSecondaryIndexes"]
    [expected] = properties["GlobalSecondaryIndexes"]
    assert (index["IndexName"], index["KeySchema"], index["Projection"]) == (
        expected["IndexName"],
        expected["KeySchema"],
        expected["Projection"],
    )
    ttl = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    assert ttl == {"AttributeName": "ttl", "TimeToLiveStatus": "ENABLED"}
