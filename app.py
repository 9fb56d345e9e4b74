"""HTTP routes: parse, call a service, shape the response. Domain logic lives in chalicelib/."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chalice.app import Chalice, CloudWatchEvent, Rate, Request, Response

from chalicelib import cold_start, deadline, observability
from chalicelib.container import services
from chalicelib.cors import VARY_ORIGIN
from chalicelib.errors import DomainError, InvalidRequest
from chalicelib.http import error_response, log_request, parse_json_body, reshape_framework_error
from chalicelib.observability import logger

if TYPE_CHECKING:
    from chalicelib.identity import Principal
    from chalicelib.uploads import IssuedSignature, UploadIntent
    from chalicelib.videos import Video

cold_start.pause_collection()
app = Chalice(app_name="vod-upload-backend")


@app.middleware("all")
def observe(event: Any, get_response: Any) -> Any:
    """Every invocation, a route's or a schedule's: its log lines carry its request id and cold-start flag,
    and its metrics are flushed as it ends; the first one ends the cold start's pause of the collector."""
    try:
        with observability.invocation(getattr(event, "lambda_context", None) or getattr(event, "context", None)):
            return get_response(event)
    finally:
        cold_start.resume_collection()


@app.middleware("http")
def log_requests(event: Any, get_response: Any) -> Response:
    started = time.perf_counter()
    response: Response = reshape_framework_error(get_response(event))
    origin = event.headers.get("origin")
    # Only a browser sends an Origin (so /health and the callback never build the services for it); a preflight's
    # view grants or refuses on its own.
    if origin and event.method != "OPTIONS":
        response.headers.update(services().cors.response_headers(origin))
    # Granted, refused or without an Origin, a browser route's answer (a preflight's too) depends on it.
    if (event.context or {}).get("resourcePath") not in NOT_FOR_BROWSERS:
        response.headers.update(VARY_ORIGIN)
    log_request(event.method, event.path, response.status_code, started, _request_id())
    return response


def _request() -> Request:
    request = app.current_request
    assert request is not None, "only called while handling a request"
    return request


def _raw_body() -> bytes:
    raw = _request().raw_body
    return raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")


def _request_id() -> str:
    request = app.current_request
    return str(((request.context if request else None) or {}).get("requestId", "-"))


# The only routes that answer without a bearer token. Every other route verifies the token before its
# view runs and passes the view the `Principal`: a route cannot be left open by forgetting a call.
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/vod/events/{token}"})
# Paths no browser page calls: they get no preflight route, so no origin is ever granted them.
NOT_FOR_BROWSERS = frozenset({"/vod/events/{token}"})


def api_route(path: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`app.route` that authenticates (unless the path is public), whose domain errors become JSON
    4xx/5xx and whose crashes never leak a trace, with every storage call bounded by the request's
    deadline."""
    authenticated = path not in PUBLIC_PATHS

    def register(view: Callable[..., Any]) -> Any:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                with deadline.within(services().settings.request_deadline_seconds):
                    if authenticated:
                        return view(_principal(), *args, **kwargs)
                    return view(*args, **kwargs)
            except DomainError as error:
                status, body, headers = error_response(error)
                return Response(body=body, status_code=status, headers=headers)
            except Exception:
                logger.exception("unhandled error", extra={"requestId": _request_id()})
                return Response(
                    body={"error": "internal_error", "message": "internal error", "requestId": _request_id()},
                    status_code=500,
                )

        # Any Content-Type reaches the view (after authentication), which says 415 in our error shape.
        return app.route(path, content_types=["*/*"], **options)(guarded)

    return register


def _principal() -> Principal:
    return services().verifier.verify(_request().headers.get("authorization"))


def _signature_body(issued: IssuedSignature) -> dict[str, Any]:
    return {
        "uploadId": issued.intent.upload_id,
        "signature": issued.signature,
        "expireTime": issued.expire_time,
        "signaturesRemaining": issued.signatures_remaining,
        "oneTimeValid": issued.intent.terms.one_time,
    }


def _intent_body(intent: UploadIntent) -> dict[str, Any]:
    client = intent.client
    return {
        "uploadId": intent.upload_id,
        "status": intent.status,
        "createdAt": intent.created_at,
        "uploadWindowEndsAt": intent.window_ends_at,
        "procedure": intent.terms.procedure,
        "storageRegion": intent.terms.storage_region,
        "classId": intent.terms.class_id,
        "title": client.title,
        "fileName": client.file_name,
        "fileSize": client.file_size,
        "contentType": client.content_type,
        "withCover": client.with_cover,
        "metadata": client.metadata,
        "client": client.client,
        "signaturesMinted": intent.signatures_minted,
        "fileId": intent.file_id,
        "cancelledAt": intent.cancelled_at,
    }


def _video_body(video: Video) -> dict[str, Any]:
    from chalicelib.media import api_fields  # only where a video is shown: the signing route needs no media facts

    return {
        "fileId": video.file_id,
        "uploadId": video.upload_id,
        "title": video.title,
        "fileName": video.file_name,
        **api_fields(video.media),
        "procedure": video.procedure,
        "procedureTaskId": video.procedure_task_id,
        "metadata": video.metadata,
        "receivedAt": video.received_at,
        "deletionRequestedAt": video.deletion_requested_at,
        "processing": video.processing,
        "processingTasks": [video.processing_tasks[task] for task in sorted(video.processing_tasks)],
        "quotaExceeded": list(video.quota_exceeded),
    }


def _create_upload(principal: Principal) -> IssuedSignature:
    from chalicelib.models import CreateUploadRequest

    request = parse_json_body(
        _raw_body(),
        _request().headers.get("content-type"),
        CreateUploadRequest,
        services().settings.max_request_body_bytes,
        optional=True,
    )
    issued = services().uploads.create(principal, request.client_fields(), request.procedure)
    logger.info(
        "upload intent created",
        extra={"uploadId": issued.intent.upload_id, "owner": principal.subject, "tier": issued.intent.tier},
    )
    return issued


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/openapi.json", methods=["GET"])
def openapi_json() -> dict[str, Any]:
    """The API contract (OpenAPI 3.1), generated from the request and response models. Like /health, it
    needs no service: it is served without building the container."""
    return _openapi_document()


@functools.cache
def _openapi_document() -> dict[str, Any]:
    from chalicelib.openapi import openapi_document

    return openapi_document()


@api_route("/uploads", methods=["POST"])
def create_upload(principal: Principal) -> Response:
    issued = _create_upload(principal)
    body = {**_signature_body(issued), "upload": _intent_body(issued.intent)}
    return Response(body=body, status_code=201, headers={"Location": f"/uploads/{issued.intent.upload_id}"})


@api_route("/uploads/{upload_id}/signature", methods=["POST"])
def renew_signature(principal: Principal, upload_id: str) -> dict[str, Any]:
    issued = services().uploads.renew_signature(principal, upload_id)
    return _signature_body(issued)


@api_route("/signature", methods=["POST"])
def compat_signature(principal: Principal) -> Response:
    issued = _create_upload(principal)
    accept = _request().headers.get("accept", "")
    if "text/plain" in accept and "application/json" not in accept:
        return Response(body=issued.signature, status_code=200, headers={"Content-Type": "text/plain"})
    return Response(body=_signature_body(issued), status_code=200)


def _upload_status_body(intent: UploadIntent) -> dict[str, Any]:
    video = services().videos.video_of(intent)
    return {**_intent_body(intent), "video": None if video is None else _video_body(video)}


@api_route("/uploads/{upload_id}", methods=["GET"])
def get_upload(principal: Principal, upload_id: str) -> dict[str, Any]:
    return _upload_status_body(services().uploads.get(principal, upload_id))


@api_route("/uploads/{upload_id}", methods=["DELETE"])
def cancel_upload(principal: Principal, upload_id: str) -> dict[str, Any]:
    """The owner takes the upload back (the page's and vodup's Cancel): no more signatures, its slot freed."""
    intent = services().uploads.cancel(principal, upload_id)
    logger.info("upload cancelled", extra={"uploadId": upload_id, "owner": principal.subject})
    return _upload_status_body(intent)


@api_route("/uploads/{upload_id}/complete", methods=["POST"])
def complete_upload(principal: Principal, upload_id: str) -> dict[str, Any]:
    """The client's upload SDK reported success with this FileId: attribute it now rather than when VOD's
    event arrives."""
    from chalicelib.models import CompleteUploadRequest

    started = time.perf_counter()
    request = parse_json_body(
        _raw_body(),
        _request().headers.get("content-type"),
        CompleteUploadRequest,
        services().settings.max_request_body_bytes,
        optional=False,
    )
    completion = services().completion.complete(principal, upload_id, request.fileId)
    logger.info(
        "upload reported complete",
        extra={
            "uploadId": upload_id,
            "fileId": request.fileId,
            "outcome": completion.outcome,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return {**_upload_status_body(completion.intent), "outcome": completion.outcome}


@api_route("/videos", methods=["GET"])
def list_videos(principal: Principal) -> dict[str, Any]:
    query: Mapping[str, str] = _request().query_params or {}
    limit_text = query.get("limit", "20")
    if not re.fullmatch(r"[0-9]{1,3}", limit_text):
        raise InvalidRequest("limit", "must be an integer between 1 and 100")
    page = services().videos.list(principal.subject, int(limit_text), query.get("cursor"))
    return {"videos": [_video_body(video) for video in page.videos], "nextCursor": page.next_cursor}


@api_route("/videos/{file_id}", methods=["GET"])
def get_video(principal: Principal, file_id: str) -> dict[str, Any]:
    return _video_body(services().videos.get(principal.subject, file_id))


@api_route("/videos/{file_id}", methods=["DELETE"])
def delete_video(principal: Principal, file_id: str) -> Response:
    """Deletes the video from VOD and from the owner's list; a second call answers the same."""
    services().deletion.delete(principal.subject, file_id)
    return Response(body="", status_code=204)


@api_route("/me", methods=["GET"])
def me(principal: Principal) -> dict[str, Any]:
    account = services().accounts.me(principal)
    tier, usage = account.tier, account.usage
    return {
        "subject": principal.subject,
        "tier": account.tier_name,
        "limits": {
            "maxStoredBytes": tier.max_stored_bytes,
            "maxVideoSeconds": tier.max_video_seconds,
            "overQuota": tier.over_quota,
            "maxFileSize": tier.max_file_size,
            "maxOpenIntents": tier.max_open_intents,
            "maxIntentsPerHour": tier.max_intents_per_hour,
        },
        "usage": {
            "bytesStored": usage.bytes_stored,
            "videos": usage.videos,
            "openIntents": usage.open_intents,
            "bytesReserved": usage.bytes_reserved,
        },
    }


@api_route("/vod/events/{token}", methods=["POST"])
def vod_event(token: str) -> Response:
    """VOD's PUSH callback. Any Content-Type: VOD does not document the one it sends."""
    started = time.perf_counter()
    try:
        outcome = services().events.receive(token, _raw_body())
    except DomainError as error:
        # A 5xx is an event we could not apply: VOD ignores the status, so the log is its only trace.
        level = logging.ERROR if error.status >= 500 else logging.WARNING
        logger.log(
            level,
            "vod event refused",
            extra={"outcome": "refused", "status": error.status, "reason": error.message},
        )
        raise
    fields = {
        "eventType": outcome.event_type,
        "fileId": outcome.file_id,
        "uploadId": outcome.upload_id,
        "outcome": outcome.outcome,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if outcome.reason:
        fields["reason"] = outcome.reason
    level = logging.WARNING if outcome.outcome in ("rejected", "orphan") else logging.INFO
    logger.log(level, "vod event", extra=fields)
    return Response(body={"code": 0, "outcome": outcome.outcome}, status_code=200)


def preflight(**_path_parameters: str) -> Response:
    """A browser's CORS preflight (no token: browsers never send one), granted by the stage's allowed origins."""
    request = _request()
    route_methods = app.routes[request.context["resourcePath"]]
    try:
        headers = services().cors.preflight(
            request.headers.get("origin"),
            request.headers.get("access-control-request-method"),
            request.headers.get("access-control-request-headers"),
            route_methods,
        )
    except DomainError as error:
        status, body, error_headers = error_response(error)
        return Response(body=body, status_code=status, headers=error_headers)
    return Response(body="", status_code=204, headers=headers)


for _path in sorted(set(app.routes) - NOT_FOR_BROWSERS):
    app.route(_path, methods=["OPTIONS"], content_types=["*/*"])(preflight)


# The scheduled functions' Lambda timeouts (.chalice/config.json, lambda_functions), and the time each run
# leaves itself to log and return after its last step.
PULL_RUN_SECONDS = 60
SWEEP_RUN_SECONDS = 120
RUN_MARGIN_SECONDS = 3.0


def _seconds_left(event: CloudWatchEvent, timeout_seconds: int) -> float:
    remaining_ms = getattr(event.context, "get_remaining_time_in_millis", lambda: timeout_seconds * 1000)()
    return float(remaining_ms) / 1000 - RUN_MARGIN_SECONDS


@app.schedule(Rate(1, unit=Rate.MINUTES))
def pull_vod_events(event: CloudWatchEvent) -> dict[str, Any]:
    """PULL mode (EVENT_MODE=pull): apply VOD's queued events until the queue is empty, or until shortly before
    the Lambda's timeout. Runs may overlap (a burst outlasting a minute): events are confirmed only once
    applied, and applying is idempotent."""
    if services().settings.event_mode != "pull":
        return {"pulled": 0, "mode": "push"}
    report = services().pull_consumer.run(_seconds_left(event, PULL_RUN_SECONDS))
    fields: dict[str, Any] = {
        "ended": report.ended, "pulls": report.pulls, "pulled": report.pulled, "failed": report.failed,
        "parked": report.parked, **report.outcomes,
    }  # fmt: skip
    if report.upload_lags:  # from an upload's creation in VOD to its attribution: what the schedule costs in latency
        fields["maxLagSeconds"] = round(max(report.upload_lags), 1)
    logger.info("vod events pulled", extra=fields)
    observability.count("EventsParked", report.parked)
    observability.count("ConsumerErrors", report.failed + report.queue_errors)
    return fields


@app.schedule(Rate(1, unit=Rate.HOURS))
def reconcile(event: CloudWatchEvent) -> dict[str, Any]:
    """The reconciliation sweep (chalicelib/sweep.py): expires intents no upload came for, and deletes (or,
    by default, reports) old uploads nobody owns."""
    report = services().sweep.run(_seconds_left(event, SWEEP_RUN_SECONDS))
    fields = report.as_fields()
    logger.log(logging.INFO if report.finished else logging.WARNING, "reconciliation sweep", extra=fields)
    return fields
