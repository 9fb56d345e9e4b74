"""The app's botocore clients are created without listing every service botocore has data for
(chalicelib/aws_loader.py), from botocore's data decoded into plain dicts, and they are the clients botocore's own
loader would have made."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.loaders
import pytest
from botocore.exceptions import UnknownServiceError

from chalicelib import aws
from chalicelib.aws_loader import DictJSONFileLoader, NamedServicesLoader

BOTOCORE_DATA = str(Path(botocore.loaders.__file__).parent / "data")


@pytest.fixture
def fresh_session() -> Iterator[None]:
    """A test's clients come from a session of their own, which no later test gets."""
    aws.reset()
    yield
    aws.reset()


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
    dynamodb_endpoint: str, table_name: str, monkeypatch: pytest.MonkeyPatch, fresh_session: None
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
    client = aws.client("dynamodb", "us-east-1", dynamodb_endpoint)
    key = {"pk": {"S": "LOADER"}, "sk": {"S": "LOADER"}}
    client.put_item(TableName=table_name, Item=key)
    assert client.get_item(TableName=table_name, Key=key, ConsistentRead=True)["Item"] == key
    assert set(listed) == {os.path.join(BOTOCORE_DATA, "dynamodb")}  # botocore's own loader lists every service


def test_an_unknown_service_is_still_refused(fresh_session: None) -> None:
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


def test_clients_share_one_session_which_reads_the_endpoint_data_once(
    monkeypatch: pytest.MonkeyPatch, fresh_session: None
) -> None:
    read: list[str] = []
    real_load_file = DictJSONFileLoader.load_file

    def load_file(self: DictJSONFileLoader, file_path: str) -> Any:
        read.append(os.path.relpath(file_path, BOTOCORE_DATA))
        return real_load_file(self, file_path)

    monkeypatch.setattr(DictJSONFileLoader, "load_file", load_file)
    aws.client("dynamodb", "us-east-1")
    assert "endpoints" in read
    read.clear()
    aws.client("secretsmanager", "us-east-1")
    aws.client("dynamodb", "eu-west-1")  # another client of a service the session knows: no file read
    assert read and all(path.startswith("secretsmanager" + os.sep) for path in read), read


def test_concurrent_first_clients_are_all_made(fresh_session: None) -> None:
    regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"]
    with ThreadPoolExecutor(len(regions) * 2) as pool:
        made = list(
            pool.map(lambda args: aws.client(*args), [(s, r) for s in ("dynamodb", "secretsmanager") for r in regions])
        )
    assert [(c.meta.service_model.service_name, c.meta.region_name) for c in made] == [
        (s, r) for s in ("dynamodb", "secretsmanager") for r in regions
    ]


def test_reset_reads_the_credentials_from_the_environment_again(
    monkeypatch: pytest.MonkeyPatch, fresh_session: None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    assert aws.client("dynamodb", "us-east-1")._request_signer._credentials.access_key == "first-key-id"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second-key-id")
    aws.reset()
    assert aws.client("dynamodb", "us-east-1")._request_signer._credentials.access_key == "second-key-id"
