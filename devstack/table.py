"""Create the table on a local endpoint from infra/data.json, the same definition CloudFormation deploys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "data.json"


def create_table_args(table_name: str, template_path: Path = TEMPLATE) -> tuple[dict[str, Any], dict[str, Any]]:
    """CreateTable and UpdateTimeToLive arguments from the template's table resource."""
    properties = json.loads(template_path.read_text())["Resources"]["Table"]["Properties"]
    create = {
        "TableName": table_name,
        "BillingMode": properties["BillingMode"],
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "GlobalSecondaryIndexes": properties.get("GlobalSecondaryIndexes", []),
    }
    if "StreamSpecification" in properties:
        # CloudFormation's StreamSpecification has no StreamEnabled (a stream is on when it is given); the API's
        # CreateTable requires it.
        create["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
    ttl = {"TableName": table_name, "TimeToLiveSpecification": properties["TimeToLiveSpecification"]}
    return create, ttl


def ensure_table(client: Any, table_name: str) -> bool:
    """Create the table unless it exists; True if it was created."""
    try:  # not ListTables: it answers 100 names at most, and a test session makes more tables than that
        client.describe_table(TableName=table_name)
        return False
    except client.exceptions.ResourceNotFoundException:
        pass
    create, ttl = create_table_args(table_name)
    client.create_table(**create)
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    client.update_time_to_live(**ttl)
    return True


def local_client(endpoint_url: str, region: str = "us-east-1") -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint-url", default="http://127.0.0.1:8002")
    parser.add_argument("--table-name", default="vod-upload-local")
    args = parser.parse_args()
    created = ensure_table(local_client(args.endpoint_url), args.table_name)
    print(f"table {args.table_name} {'created' if created else 'already exists'} at {args.endpoint_url}")


if __name__ == "__main__":
    main()
