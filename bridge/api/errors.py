"""The error envelope every response uses: `{"detail": {"code", "message"}}` plus a request id.

Handlers raise ApiError (bridge.errors, so the call layer can raise it without importing HTTP);
the middleware here turns it, and every failure nobody expected, into that envelope. Nothing
reaches the client as a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bridge.api.body import check_headers, read_json_object
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.services import SERVICES_KEY
from bridge.store.redis import StoreUnavailable

# read_json_object lives in bridge.api.body; the routes import it from here.
__all__ = ["ApiError", "SwitchError", "SwitchUnavailable", "read_json_object"]

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# A client's own X-Request-Id is echoed back only if it is this plain; otherwise the bridge makes one.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": {"code": code, "message": message, **extra}}


def json_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER)
    request_id = given if given and _CLIENT_REQUEST_ID.match(given) else new_request_id()
    request["request_id"] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        check_headers(request.headers)
        response = await handler(request)
    except ApiError as exc:
        extra = dict(exc.extra)
        if exc.status >= 500:
            extra["request_id"] = request_id
        response = json_error(exc.status, exc.code, exc.message, headers=exc.headers, **extra)
    except SwitchUnavailable as exc:
        log.warning("switch_unavailable", error=str(exc))
        response = json_error(
            503,
            "switch_unavailable",
            f"FreeSWITCH is not reachable: {exc}",
            request_id=request_id,
        )
    except SwitchError as exc:
        log.warning("switch_command_failed", command=exc.command, reply=exc.reply)
        response = json_error(
            502, exc.code, f"FreeSWITCH refused the command: {exc.reply}", request_id=request_id
        )
    except (StoreUnavailable, RedisError, ConnectionError) as exc:
        log.error("store_unavailable", error=str(exc))
        services = request.app.get(SERVICES_KEY)
        if services is not None:
            services.metrics.redis_error("api", exc)
        response = json_error(
            503,
            "store_unavailable",
            "the session store (Redis) is not reachable",
            request_id=request_id,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = json_error(exc.status, code, exc.reason or code, headers=_allow(exc))
    except Exception:
        log.exception("unhandled_error", path=request.path)
        response = json_error(500, "internal_error", "unexpected server error", request_id=request_id)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if response.status == 413:
        # The body was not read: close rather than drain what the client may still be sending.
        response.force_close()
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def error_outcome(exc: BaseException) -> tuple[int, str]:
    """The status and code error_middleware answers `exc` with (the control metrics count them)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    if isinstance(exc, SwitchUnavailable):
        return 503, "switch_unavailable"
    if isinstance(exc, SwitchError):
        return 502, exc.code
    if isinstance(exc, (StoreUnavailable, RedisError, ConnectionError)):
        return 503, "store_unavailable"
    if isinstance(exc, web.HTTPException):
        return exc.status, _HTTP_CODES.get(exc.status, "http_error")
    return 500, "internal_error"


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def new_request_id() -> str:
    from ulid import ULID

    return f"req_{ULID()}"


def validation_error(exc: Any) -> ApiError:
    """A pydantic ValidationError as a 400 with the field errors."""
    errors = [
        {
            "loc": list(err.get("loc", ())),
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid body"}
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return ApiError(400, "validation_error", f"{where}: {first['msg']}", extra={"errors": errors})
