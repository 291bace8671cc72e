"""aiohttp's own refusals in the error envelope.

A request aiohttp's HTTP parser cannot parse (a garbage request line, a header over 8190 bytes, too
many headers, a control character or NUL in a header, a malformed Content-Length) never reaches the
application or its middlewares: the connection's RequestHandler answers it from `handle_error` with
a plain-text 400 that echoes the offending bytes. aiohttp has no public hook for that answer
(aio-libs/aiohttp#3287), so the bridge's runner builds its connections from a RequestHandler whose
`handle_error` answers in the envelope instead:

- 431 `request_header_fields_too_large` for a request line or a header field over the limit, or
  more headers than the limit (aiohttp raises the same LineTooLong for the request line and for a
  header, so both are 431);
- 400 `bad_request` for every other parse error, with the parser's reason but not the bytes;
- 500 `internal_error` (with its request id) for what escaped the application, which the error
  middleware leaves nothing of in practice.

The connection is closed after such an answer, as aiohttp does. A body over the limit is refused
inside the application (bridge/api/body.py), where the middleware already answers in the envelope.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from bridge.api.errors import REQUEST_ID_HEADER, json_error, new_request_id

log = structlog.get_logger(__name__)

# aiohttp's defaults (web_protocol.RequestHandler), named so the messages can quote them.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128


def _describe(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received"
    ):
        return (
            431,
            "request_header_fields_too_large",
            f"the request line and each header must be at most {MAX_LINE_BYTES} bytes, "
            f"with at most {MAX_HEADERS} headers",
        )
    if status < 500:
        reason = exc.message if isinstance(exc, HttpProcessingError) else ""
        # The parser's reason is its first line; the lines after it quote the request's bytes.
        reason = reason.split("\n", 1)[0].rstrip(": ")[:200] or "malformed request"
        return status, "bad_request", f"malformed HTTP request: {reason}"
    return status, "internal_error", "unexpected server error"


class EnvelopeRequestHandler(RequestHandler):
    """A connection whose own error answers (parse errors, escaped exceptions) use the envelope."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response went out already; as aiohttp does, give up on the connection.
            raise ConnectionError("a response was already being sent; cannot send an error")
        status, code, text = _describe(status, exc)
        request_id = new_request_id()
        if status >= 500:
            log.error("http_error", status=status, request_id=request_id, exc_info=exc)
            response = json_error(status, code, text, request_id=request_id)
        else:
            log.info("http_refused", status=status, code=code, reason=text, peer=request.remote)
            response = json_error(status, code, text)
        response.headers[REQUEST_ID_HEADER] = request_id
        response.force_close()
        return response


class EnvelopeServer(web.Server):
    """web.Server (the protocol factory) that makes EnvelopeRequestHandler connections."""

    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose server answers aiohttp's own errors in the envelope (see above)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's Server as aiohttp built it (its handler, request factory and settings), with
        # only the protocol factory changed. EnvelopeServer adds no state, so the swap is exact;
        # if aiohttp ever gives Server __slots__, this fails at start-up, not in a request.
        server.__class__ = EnvelopeServer
        return server
