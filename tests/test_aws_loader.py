"""The app's botocore clients are created without listing every service botocore has data for
(chalicelib/aws_loader.py), from botocore's data decoded into plain dicts, and they are the clients botocore's own
loader would have made."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import botocore.loaders
import pytest
from botocore.exceptions import UnknownServiceError

from chalicelib import aws
from chalicelib.aws_loader import DictJSONFileLoader, NamedServicesLoader

BOTOCORE_DATA = str(Path(botocore.loaders.__file__).parent / "data")


@pytest.mark.parametrize("type_name", ["service-2", "endpoint-rule-set-1"])
def test_of_the_named_services_it_lists_those_botocore_lists(type_name: str) -> None:
    named = ["secretsmanager", "dynamodb", "no-such-service"]
    everything = botocore.loaders.Loader().list_available_services(type_name)
    assert "dynamodb" in everything and "secretsmanager" in everything
    assert NamedServicesLoader(named, None).list_available_services(type_name) == [
        service for service in sorted(named) if service in everything
    ]


def test_aws_data_path_comes_first_as_botocore_puts_it(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    loader = NamedServicesLoader(["dynamodb"], os.pathsep.join([str(first), str(second)]))
    assert loader.search_paths[:2] == [str(first), str(second)]
    assert loader.search_paths[2:] == botocore.loaders.Loader().search_paths


def test_a_client_lists_only_its_own_service_directory_and_writes(
    dynamodb_endpoint: str, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: Any = ".") -> list[str]:
        if str(path).startswith(BOTOCORE_DATA):
            listed.append(str(path))
        return real_listdir(path)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setattr(os, "listdir", listdir)
    client = aws.client.__wrapped__("dynamodb", "us-east-1", dynamodb_endpoint)  # a new one, not aws.client's cached
    key = {"pk": {"S": "LOADER"}, "sk": {"S": "LOADER"}}
    client.put_item(TableName=table_name, Item=key)
    assert client.get_item(TableName=table_name, Key=key, ConsistentRead=True)["Item"] == key
    assert set(listed) == {os.path.join(BOTOCORE_DATA, "dynamodb")}  # botocore's own loader lists every service


def test_an_unknown_service_is_still_refused() -> None:
    with pytest.raises(UnknownServiceError):
        aws.client("no-such-service", "us-east-1")


def ordered(value: Any) -> Any:
    """`value` with every mapping as a list of its items, in order: equal only if the order is too."""
    if isinstance(value, dict):
        return [(key, ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [ordered(item) for item in value]
    return value


@pytest.mark.parametrize(
    ("name", "load"),
    [
        ("endpoints", lambda loader: loader.load_data("endpoints")),
        ("partitions", lambda loader: loader.load_data("partitions")),
        ("sdk-default-configuration", lambda loader: loader.load_data("sdk-default-configuration")),
        ("dynamodb model", lambda loader: loader.load_service_model("dynamodb", "service-2")),
        ("dynamodb rules", lambda loader: loader.load_service_model("dynamodb", "endpoint-rule-set-1")),
        ("secretsmanager model", lambda loader: loader.load_service_model("secretsmanager", "service-2")),
    ],
)
def test_it_decodes_botocore_data_into_plain_dicts_equal_to_botocores_in_order_too(name: str, load: Any) -> None:
    mine, botocores = load(NamedServicesLoader(["dynamodb", "secretsmanager"], None)), load(botocore.loaders.Loader())
    assert type(mine) is dict and type(botocores) is not dict, name  # botocore's own: an OrderedDict of each object
    assert ordered(mine) == ordered(botocores), name


def test_it_reads_a_compressed_data_file_and_answers_none_for_a_missing_one(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "rules.json.gz", "wb") as compressed:
        compressed.write(json.dumps({"version": "1.0", "rules": [{"b": 1, "a": 2}]}).encode())
    loader = DictJSONFileLoader()
    assert ordered(loader.load_file(str(tmp_path / "rules"))) == [("version", "1.0"), ("rules", [[("b", 1), ("a", 2)]])]
    assert loader.load_file(str(tmp_path / "missing")) is None
