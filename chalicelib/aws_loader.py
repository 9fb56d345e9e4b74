"""botocore's data loader, answering "which services exist" for the services this app names only.

To create a client, botocore checks that its service exists by listing every service it holds data for: some 450
directories under botocore/data, each listed and probed, once for the service model and once for its endpoint
rules. On a cold start that is about 5,000 system calls and 47 M instructions, some 12 ms of CPU, most of it in
the kernel (bench/cold_start.py; its floor pays it too). This loader answers that question for the services a
client was created for, from the same files botocore would have found (`list_api_versions`); all else is
botocore's own loader.

It also decodes botocore's JSON data with msgspec into plain dicts. botocore's own file loader decodes every object
of it into an `OrderedDict` (json's `object_pairs_hook`), three times slower: its 1.25 MB `endpoints.json`, which
every new session reads to create its first client, takes about 12 ms that way and 4 ms this way, the DynamoDB
model 5 ms and 2 ms. Plain dicts keep the file's order too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import IO, Any

import msgspec
from botocore.exceptions import DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader, create_loader


class DictJSONFileLoader(JSONFileLoader):  # type: ignore[misc]  # botocore has no type hints
    def _load_file(self, full_path: str, open_method: Callable[[str, str], IO[bytes]]) -> Any:
        """One of the file's forms botocore looks for (`.json`, `.json.gz`), as botocore reads it: None if absent."""
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as data:
            return msgspec.json.decode(data.read())


class NamedServicesLoader(Loader):  # type: ignore[misc]  # botocore has no type hints
    def __init__(self, services: Iterable[str], data_path: str | None) -> None:
        # The directories botocore's own loader searches, AWS_DATA_PATH's first: the same files are found.
        super().__init__(
            extra_search_paths=create_loader(data_path).search_paths,
            file_loader=DictJSONFileLoader(),
            include_default_search_paths=False,
        )
        self._services = set(services)

    def name(self, service: str) -> None:
        """Also answer for `service` from now on (a client of it is about to be created)."""
        self._services.add(service)

    def list_available_services(self, type_name: str) -> list[str]:
        """Of the named services, those botocore has `type_name` data for (a service model, endpoint rules)."""
        available = []
        for service in sorted(self._services):
            try:
                self.list_api_versions(service, type_name)
            except DataNotFoundError:
                continue
            available.append(service)
        return available
