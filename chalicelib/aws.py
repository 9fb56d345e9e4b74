"""AWS clients, created on first use so that importing the app stays cheap on a cold start.

Every client comes from one botocore session. A session reads botocore's endpoint data and sets up its event
handlers for its first client: a second session (a route that reads the stage's secret and writes to the table)
would pay about 20 ms more of a cold start, where a second client of the same session costs about 3 ms.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

# A botocore session is not thread-safe, its clients are: clients are created one at a time.
_CREATING = threading.Lock()


@lru_cache(maxsize=1)
def _session() -> Any:
    # botocore directly: boto3's resource layer is not needed and costs import time.
    import botocore.session

    from chalicelib.aws_loader import NamedServicesLoader

    session = botocore.session.get_session()
    session.register_component("data_loader", NamedServicesLoader([], session.get_config_variable("data_path")))
    return session


@lru_cache(maxsize=8)
def client(
    service: str,
    region: str,
    endpoint_url: str | None = None,
    connect_timeout: float = 1.0,
    read_timeout: float = 2.5,
    max_attempts: int = 1,
) -> Any:
    """A botocore client whose calls give up quickly: the caller owns the retry budget, because only it
    knows its deadline (botocore's own retries would wait up to 20 s on a stalled endpoint)."""
    import botocore.config

    config = botocore.config.Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
    )
    with _CREATING:
        session = _session()
        session.get_component("data_loader").name(service)
        return session.create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def reset() -> None:
    """Forget the clients and their session, and with it the credentials and configuration it read from the
    environment (tests change the environment between cases)."""
    client.cache_clear()
    _session.cache_clear()
