"""AWS clients, created on first use so that importing the app stays cheap on a cold start."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=8)
def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    # botocore directly: boto3's resource layer is not needed and costs import time.
    import botocore.config
    import botocore.session

    config = botocore.config.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    return botocore.session.get_session().create_client(
        service, region_name=region, endpoint_url=endpoint_url, config=config
    )
