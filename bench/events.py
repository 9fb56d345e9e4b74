"""DynamoDB round trips per request and handler time per event, against the local DynamoDB endpoint.

Run: `.venv/bin/python bench/events.py [--events 200]`. Uses the real services (settings from the
`local` stage, a fresh table on an in-process serialised moto server) and counts every DynamoDB call
with a botocore event hook.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib import container, vod_signature
from chalicelib.identity import Principal
from chalicelib.settings import Settings
from chalicelib.uploads import ClientFields
from devstack.dynamodb import DynamoDBServer
from devstack.table import ensure_table, local_client
from devstack.token import local_stage_env
from tests import vod_payloads as vod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    with DynamoDBServer() as server:
        policy = {"default": {"maxOpenIntents": 10**6, "maxIntentsPerHour": 10**6}}
        env = {
            **local_stage_env(),
            "DYNAMODB_ENDPOINT_URL": server.endpoint_url,
            "TABLE_NAME": "bench",
            "UPLOAD_POLICY": json.dumps(policy),
        }
        os.environ.update(env)  # botocore reads the local credentials from the process environment
        ensure_table(local_client(server.endpoint_url), "bench")
        services = container.build_services(Settings.from_env(env), env)
        calls: Counter[str] = Counter()
        in_dynamodb = [0.0, 0.0]  # [started, total seconds]
        events = services.storage.table.client.meta.events

        def before(model, **_):  # type: ignore[no-untyped-def]
            calls.update([model.name])
            in_dynamodb[0] = time.perf_counter()

        def after(**_):  # type: ignore[no-untyped-def]
            in_dynamodb[1] += time.perf_counter() - in_dynamodb[0]

        events.register("before-call.dynamodb", before)
        events.register("after-call.dynamodb", after)
        secrets = services.secrets.get()
        alice = Principal("alice", {})
        timings: dict[str, list[float]] = {"create intent": [], "NewFileUpload": [], "duplicate": [], "PSC": []}
        trips: dict[str, list[int]] = {key: [] for key in timings}
        own: dict[str, list[float]] = {key: [] for key in timings}

        def measure(kind: str, action) -> object:  # type: ignore[no-untyped-def]
            calls.clear()
            in_dynamodb[1] = 0.0
            started = time.perf_counter()
            result = action()
            total = (time.perf_counter() - started) * 1000
            timings[kind].append(total)
            own[kind].append(total - in_dynamodb[1] * 1000)
            trips[kind].append(sum(calls.values()))
            return result

        for index in range(args.events):
            issued = measure("create intent", lambda: services.uploads.create(alice, ClientFields(title="b"), None))
            context = vod_signature.verify(issued.signature, secrets.vod_secret_key).params.options.sourceContext
            body = json.dumps(vod.signed(vod.new_file_upload(f"bench-{index}", context), secrets.sign_key)).encode()
            deliver = functools.partial(services.events.receive, secrets.callback_token, body)
            measure("NewFileUpload", deliver)
            measure("duplicate", deliver)
            psc = vod.procedure_state_changed(f"bench-{index}", "t", "FINISH", [(10, "SUCCESS")])
            psc_body = json.dumps(vod.signed(psc, secrets.sign_key)).encode()
            measure("PSC", functools.partial(services.events.receive, secrets.callback_token, psc_body))

        for kind, samples in timings.items():
            quantiles = statistics.quantiles(samples, n=100)
            print(
                f"{kind:14s} DynamoDB calls {statistics.mean(trips[kind]):.2f}  "
                f"median {statistics.median(samples):6.1f} ms  p99 {quantiles[98]:6.1f} ms  "
                f"handler excl. DynamoDB median {statistics.median(own[kind]):5.2f} ms  (n={len(samples)})"
            )


if __name__ == "__main__":
    main()
