"""AWS clients, created on first use so that importing the app stays cheap on a cold start."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


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
    # botocore directly: boto3's resource layer is not needed and costs import time.
    import botocore.config
    import botocore.session

    from chalicelib.aws_loader import NamedServicesLoader

    config = botocore.config.Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
    )
    session = botocore.session.get_session()
    session.register_component("data_loader", NamedServicesLoader([service], session.get_config_variable("data_path")))
    return session.create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)
