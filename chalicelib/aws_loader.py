"""botocore's data loader, answering "which services exist" for the services this app names only.

To create a client, botocore checks that its service exists by listing every service it holds data for: some 450
directories under botocore/data, each listed and probed, once for the service model and once for its endpoint
rules. On a cold start that is about 5,000 system calls and 47 M instructions, some 12 ms of CPU, most of it in
the kernel (bench/cold_start.py; its floor pays it too). This loader answers that question for the services a
client was created for, from the same files botocore would have found (`list_api_versions`); all else is
botocore's own loader.
"""

from __future__ import annotations

from collections.abc import Iterable

from botocore.exceptions import DataNotFoundError
from botocore.loaders import Loader, create_loader


class NamedServicesLoader(Loader):  # type: ignore[misc]  # botocore has no type hints
    def __init__(self, services: Iterable[str], data_path: str | None) -> None:
        # The directories botocore's own loader searches, AWS_DATA_PATH's first: the same files are found.
        super().__init__(extra_search_paths=create_loader(data_path).search_paths, include_default_search_paths=False)
        self._services = tuple(services)

    def list_available_services(self, type_name: str) -> list[str]:
        """Of the named services, those botocore has `type_name` data for (a service model, endpoint rules)."""
        available = []
        for service in self._services:
            try:
                self.list_api_versions(service, type_name)
            except DataNotFoundError:
                continue
            available.append(service)
        return sorted(available)
