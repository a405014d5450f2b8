"""The emulator's HTTP surface: a plain Starlette app over :class:`EmulatorState`.

Handlers do O(1) work per request (dict lookups, one small JSON dump), so one event loop
holds thousands of keep-alive pollers. They log one line per request only when asked
(``log_requests``: the command line does, ``--quiet`` not), on :data:`REQUEST_LOGGER`.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import hmac
import http
import io
import json
import logging
import math
import mimetypes
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from . import _media, _models
from ._control_api import CONTROL_METHODS
from ._state import (
    API_ENDPOINTS,
    LISTED_STATUSES,
    UPLOAD_LIMITS,
    EmulatorState,
    Fault,
    InsufficientBalance,
    Prediction,
    TierRateLimited,
)

JSON = "application/json"
_DROP = "wavespeed_emulator.drop"  # scope flag: close the connection, send nothing
_DROP_AFTER_SUBMIT = "wavespeed_emulator.drop_after_submit"
_DROP_AFTER_DELETE = "wavespeed_emulator.drop_after_delete"
_SLOW_AFTER_SUBMIT = "wavespeed_emulator.slow_after_submit"  # seconds to wait after creating the prediction
_WRONG_TYPES = {
    "id": 123,
    "model": 42,
    "status": 123,
    "outputs": "x",
    "urls": "nope",
    "has_nsfw_contents": "no",
    "created_at": 0,
    "error": 7,
    "timings": [],
    "balance": "lots",
    "download_url": 5,
    "unit_price": "free",
    "deleted_count": "some",
    "items": {},
}
_WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
# One INFO line per request: method, path (never the query: a webhook URL may carry a token), status, model.
REQUEST_LOGGER = logging.getLogger("airflow_provider_wavespeed.testing.requests")

Handler = Callable[[Request], Awaitable[Response]]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _ok(data: Any) -> Response:
    return Response(b'{"code":200,"message":"success","data":' + _dumps(data) + b"}", media_type=JSON)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = _dumps({"code": status, "message": message, "data": None})
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _gateway_page(status: int) -> Response:
    """Answer as a proxy in front of the API does for 5xx: HTML, not the envelope."""
    phrase = _phrase(status)
    page = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Response(page, status_code=status, media_type="text/html")


class _DropConnection(Response):
    """Marks the request so :class:`EmulatorApp` has it closed unanswered."""

    def __init__(self) -> None:
        super().__init__(status_code=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_DROP] = True


class EmulatorApp:
    """The emulator's ASGI app: Starlette, plus closing a connection without an answer (``drop``).

    ASGI has no "close without answering". Uvicorn (h11, httptools and zttp alike) closes the
    connection without writing a byte when the app returns something other than None, and logs
    one error naming that value; so the app returns itself for a dropped request, and is the
    logging filter that hides exactly those errors (attach it to ``uvicorn.error`` while serving).
    """

    def __init__(self, state: EmulatorState, *, log_requests: bool = False) -> None:
        self.state = state
        self.log_requests = log_requests
        self.starlette = Starlette(routes=_Api(state).routes(), exception_handlers={HTTPException: _http_exception})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if not self.log_requests or scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return self if scope.get(_DROP) else None
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.starlette(scope, receive, send_noting_status)
        self._log(scope, "dropped" if scope.get(_DROP) else str(status))  # dropped: closed unanswered
        return self if scope.get(_DROP) else None

    def _log(self, scope: Scope, answer: str) -> None:
        """Log one request: method, path, answer, model (its path's, or its prediction's)."""
        params = scope.get("path_params", {})
        model: str | None = params.get("model")
        if "prediction_id" in params:
            prediction = self.state.predictions.get(params["prediction_id"])
            model = prediction.model if prediction is not None else None
        REQUEST_LOGGER.info("%s %s %s %s", scope["method"], scope["path"], answer, model or "-")

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop uvicorn's "ASGI callable should return None, but returned <this app>" (return False)."""
        return not (isinstance(record.args, tuple) and record.args and record.args[0] is self)

    def __repr__(self) -> str:
        return "<a 'drop' fault of the WaveSpeed emulator>"


def _base_url(request: Request) -> str:
    """Return the URL this client used to reach us, so output URLs work on any port or name."""
    host = request.headers.get("host")
    if not host:
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{request.url.scheme}://{host}"


async def _finished(state: EmulatorState, prediction: Prediction) -> float:
    """Sleep until the prediction is terminal (a held one: until released) or gone; returns the time."""
    while True:
        now = time.time()
        state.advance(now)  # a prediction queued under the tier's concurrency cap may have started
        if state.predictions.get(prediction.id) is not prediction or prediction.deleted:
            return now
        if not prediction.held and now >= prediction.completes_at:
            return max(now, prediction.completes_at)  # the loop's timer may wake a hair early
        # A release (or a queued one's slot) comes from another thread or request: look again shortly.
        waiting = prediction.held or prediction.queued
        await asyncio.sleep(0.05 if waiting else prediction.completes_at - now)


class _Api:
    """Route handlers; all state lives in ``self.state``."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._webhook_tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[Route]:
        gated, counted = self._gated, self._counted  # gated: auth, rate limit and faults first
        read_result = functools.partial(self._read_prediction, endpoint="result")
        read_prediction = functools.partial(self._read_prediction, endpoint="prediction")
        return [
            Route("/api/v3/balance", gated("balance", self.balance), methods=["GET"]),
            Route("/api/v3/models", gated("models", self.models), methods=["GET"]),
            Route("/api/v3/predictions/{prediction_id}/result", counted("result", read_result), methods=["GET"]),
            Route("/api/v3/predictions/{prediction_id}", counted("prediction", read_prediction), methods=["GET"]),
            Route(
                "/api/v3/predictions/{prediction_id}",
                counted("delete_prediction", self.delete_prediction),
                methods=["DELETE"],
            ),
            Route("/api/v3/predictions", gated("history", self.history), methods=["POST"]),
            Route("/api/v3/predictions/delete", gated("delete", self.delete), methods=["POST"]),
            Route("/api/v3/model/pricing", gated("pricing", self.pricing), methods=["POST"]),
            Route("/api/v3/media/upload/binary", gated("upload", self.upload), methods=["POST"]),
            Route("/api/v3/media/uploads", gated("upload_ticket", self.upload_ticket), methods=["POST"]),
            Route("/api/v3/upload", gated("upload", self.upload), methods=["POST"]),
            # Model ids have any depth, so this catch-all comes after the fixed routes.
            Route("/api/v3/{model:path}", counted("submit", self.submit), methods=["POST"]),
            Route("/_emulator/files/{name}", gated("files", self.files), methods=["GET"]),
            Route("/_emulator/uploads/{name}", counted("uploads", self.uploaded_file), methods=["GET"]),
            Route("/_emulator/uploads/{name}", counted("upload_put", self.upload_put), methods=["PUT"]),
            Route("/_emulator/control/{method}", self.control, methods=["POST"]),
            Route("/_emulator/health", self.health, methods=["GET"]),
        ]

    def _counted(self, endpoint: str, handler: Handler) -> Handler:
        record = self.state.record

        async def counted(request: Request) -> Response:
            started = time.time()
            response = await handler(request)
            record(endpoint, response.status_code, started)
            return response

        return counted

    def _gated(self, endpoint: str, handler: Handler) -> Handler:
        """Count the handler and pass :meth:`_gate` first (the endpoints whose faults match no model)."""

        async def gated(request: Request) -> Response:
            early = await self._gate(request, endpoint)
            return early if early is not None else await handler(request)

        return self._counted(endpoint, gated)

    # -- the gate every API request passes -----------------------------------------

    async def _gate(
        self, request: Request, endpoint: str, model: str | None = None, prediction: Prediction | None = None
    ) -> Response | None:
        """Auth, rate limit and faults, in that order; a Response means "answer this"."""
        if endpoint in API_ENDPOINTS:  # not the public files nor the pre-signed upload URL
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.state.api_key.encode()
            ):
                return _error(401, "Invalid API key: send 'Authorization: Bearer <your API key>'")
            retry_after = self.state.admit_rate()
            if retry_after is not None:
                return _error(429, "Too many requests: rate limit exceeded", {"Retry-After": str(retry_after)})
        fault = self.state.take_fault(endpoint, model)
        if fault is None:
            return None
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay or 0.0)
            return None
        if fault.kind == "drop_after_submit":
            request.scope[_DROP_AFTER_SUBMIT] = True
            return None
        if fault.kind == "drop_after_delete":
            request.scope[_DROP_AFTER_DELETE] = True
            return None
        if fault.kind == "slow_after_submit":
            request.scope[_SLOW_AFTER_SUBMIT] = fault.delay or 0.0
            return None
        return self._fault_response(fault, request, model, prediction)

    def _fault_response(
        self, fault: Fault, request: Request, model: str | None, prediction: Prediction | None
    ) -> Response:
        kind = fault.kind
        if kind == "drop":
            return _DropConnection()
        if kind == "http_error":
            status = fault.status or 503
            if status >= 500:
                return _gateway_page(status)
            return _error(status, _phrase(status))
        if kind == "rate_limit":
            retry_after = 1 if fault.retry_after is None else max(0, math.ceil(fault.retry_after))
            return _error(429, "Too many requests: rate limit exceeded", {"Retry-After": str(retry_after)})
        if kind == "html":
            return Response("<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>", media_type="text/html")
        if kind == "envelope_error":
            return Response(_dumps({"code": 500, "message": "internal error", "data": None}), media_type=JSON)
        if kind == "wrong_types":
            return _ok(_WRONG_TYPES)
        # The rest distort a prediction object: the real one when there is one.
        if prediction is not None:
            sample = prediction.to_api(_base_url(request), time.time())
        else:
            sample = Prediction(model or "unknown/model", {}, 0.0, "completed", "", None).to_api(
                _base_url(request), time.time()
            )
        if kind == "missing_outputs":
            sample["status"] = "completed"
            del sample["outputs"]
            return _ok(sample)
        body = _ok(sample).body  # "truncated": a valid HTTP response carrying half a JSON document
        return Response(bytes(body[: len(body) // 2]), media_type=JSON)

    async def _json_object(self, request: Request, what: str) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, f"Invalid request body: expected a JSON object of {what}")
        return body

    # -- API endpoints -------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        model: str = request.path_params["model"]
        early = await self._gate(request, "submit", model=model)
        if early is not None:
            return early
        problem = self.state.refuse_model(model)
        if problem is not None:
            return _error(*problem)
        inputs = await self._json_object(request, "model inputs")
        if isinstance(inputs, Response):
            return inputs
        webhook = request.query_params.get("webhook")
        if webhook is not None and urllib.parse.urlsplit(webhook).scheme not in ("http", "https"):
            return _error(400, f"Invalid webhook URL {webhook!r}: expected an http(s) URL")
        if webhook is not None and inputs.get("enable_base64_output") is True:
            return _error(400, "Invalid request parameters: enable_base64_output cannot be used with a webhook")
        message = _models.validate_inputs(self.state.model_spec(model), inputs)
        if message is not None:
            return _error(400, message)
        try:
            prediction = self.state.submit(model, inputs, webhook)
        except TierRateLimited as exc:
            return _error(429, str(exc), {"Retry-After": str(exc.retry_after)})
        except InsufficientBalance as exc:
            return _error(403, str(exc))
        base = _base_url(request)
        if webhook is not None:
            task = asyncio.get_running_loop().create_task(self._deliver_webhook(prediction, base))
            self._webhook_tasks.add(task)  # keep a reference until done
            task.add_done_callback(self._webhook_tasks.discard)
        if request.scope.get(_DROP_AFTER_SUBMIT):
            return _DropConnection()
        if request.scope.get(_SLOW_AFTER_SUBMIT):
            await asyncio.sleep(request.scope[_SLOW_AFTER_SUBMIT])  # created; the answer is late
        # The answer describes the task as created, however long this thread waited for the CPU since.
        now = prediction.submitted_at
        if inputs.get("enable_sync_mode") is True:
            now = await _finished(self.state, prediction)
        return _ok(prediction.to_api(base, now))

    async def _read_prediction(self, request: Request, endpoint: str) -> Response:
        prediction_id: str = request.path_params["prediction_id"]
        prediction = self.state.predictions.get(prediction_id)
        model = prediction.model if prediction is not None else None
        self.state.advance()  # admit predictions queued under the tier's cap whose slot has come
        early = await self._gate(request, endpoint, model=model, prediction=prediction)
        if early is not None:
            return early
        if prediction is None:
            return _error(404, f"Prediction not found: {prediction_id}")
        self.state.count_poll(prediction)
        return _ok(prediction.to_api(_base_url(request), time.time()))

    async def balance(self, request: Request) -> Response:
        return _ok({"balance": round(self.state.balance, 6)})

    async def models(self, request: Request) -> Response:
        return _ok(_models.model_list(self.state.models, self.state.prices))

    async def pricing(self, request: Request) -> Response:
        body = await self._json_object(request, "model_id and inputs")
        if isinstance(body, Response):
            return body
        model_id = body.get("model_id")
        inputs = body.get("inputs", {})
        if not isinstance(model_id, str) or not model_id:
            return _error(400, "Invalid request parameters: model_id is required")
        if not isinstance(inputs, dict):
            return _error(400, "Invalid request parameters: inputs must be an object")
        problem = self.state.refuse_model(model_id)
        if problem is not None:
            return _error(*problem)
        return _ok({"model_id": model_id, "unit_price": self.state.quote(model_id, inputs), "currency": "USD"})

    async def history(self, request: Request) -> Response:
        """Answer ``POST /predictions``: the last 7 days, newest first.

        Each item carries its ``input`` unless ``set_history(inputs=False)`` (the documented example shows none).
        """
        body = await self._json_object(request, "page and page_size")
        if isinstance(body, Response):
            return body
        page, page_size = body.get("page"), body.get("page_size")
        model, status = body.get("model"), body.get("status")
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            return _error(400, "Invalid request parameters: page must be an integer >= 1")
        if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= 100:
            return _error(400, "Invalid request parameters: page_size must be an integer between 1 and 100")
        if not isinstance(model, (str, type(None))) or not isinstance(status, (str, type(None))):
            return _error(400, "Invalid request parameters: model and status must be strings")
        if status is not None and status not in LISTED_STATUSES:
            known = ", ".join(sorted(LISTED_STATUSES))
            return _error(400, f"Invalid request parameters: status must be one of {known}")
        bounds: dict[str, int | None] = {}
        for name in ("created_after", "created_before"):
            bounds[name] = _epoch_ns(body.get(name))
            if body.get(name) is not None and bounds[name] is None:
                return _error(400, f"Invalid request parameters: {name} must be an ISO 8601 date-time")
        total, items = self.state.history(
            page, page_size, model, status, bounds["created_after"], bounds["created_before"]
        )
        base, now = _base_url(request), time.time()
        inputs = self.state.history_inputs
        listed = [{**p.to_api(base, now), **({"input": p.inputs} if inputs else {})} for p in items]
        return _ok({"page": page, "page_size": page_size, "total": total, "items": listed})

    async def delete(self, request: Request) -> Response:
        body = await self._json_object(request, "ids")
        if isinstance(body, Response):
            return body
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
            return _error(400, "Invalid request parameters: ids must be a list of prediction ids")
        return _ok({"deleted_count": self.state.delete(ids)})

    async def delete_prediction(self, request: Request) -> Response:
        """``DELETE /predictions/{id}``: deletes it (an unfinished one is cancelled); answers its object.

        Idempotent: a repeat answers the same object and changes nothing (but is counted).
        """
        prediction_id: str = request.path_params["prediction_id"]
        prediction = self.state.predictions.get(prediction_id)
        self.state.advance()  # a queued one may have started meanwhile
        model = prediction.model if prediction is not None else None
        early = await self._gate(request, "delete_prediction", model=model, prediction=prediction)
        if early is not None:
            return early
        if prediction is None:
            return _error(404, f"Prediction not found: {prediction_id}")
        self.state.delete_prediction(prediction)
        if request.scope.get(_DROP_AFTER_DELETE):
            return _DropConnection()
        return _ok(prediction.to_api(_base_url(request), time.time()))

    async def upload(self, request: Request) -> Response:
        """Store a file of the older one-step flows: multipart ``file`` to ``/media/upload/binary`` (or ``/upload``)."""
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return _error(400, "Invalid upload: expected a multipart/form-data body")
        try:
            async with request.form() as form:
                part = form.get("file")
                if part is None:
                    return _error(400, "Invalid upload: the multipart field 'file' is required")
                # A part without a filename is a plain field: its text is the file.
                upload = UploadFile(io.BytesIO(part.encode())) if isinstance(part, str) else part
                name, filename, size = await asyncio.to_thread(self.state.store_upload, upload.filename, upload.file)
        except HTTPException as exc:  # Starlette's answer to a body that is not valid multipart
            return _error(400, f"Invalid upload: {exc.detail}")
        content_type = upload.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        major = content_type.split("/", 1)[0]
        legacy = request.url.path.rstrip("/").endswith("/api/v3/upload")
        return _ok(
            {
                "type": major if major in ("image", "video", "audio") else "file",
                "download_url": f"{_base_url(request)}/_emulator/uploads/{name}",
                # The oldest flow, POST /api/v3/upload, named the URL `url`.
                **({"url": f"{_base_url(request)}/_emulator/uploads/{name}"} if legacy else {}),
                "filename": filename,
                "size": size,
            }
        )

    async def upload_ticket(self, request: Request) -> Response:
        """Step one of the SDK 2.x upload: ``{filename, size, content_type?}`` -> a pre-signed PUT."""
        body = await self._json_object(request, "filename, size and content_type")
        if isinstance(body, Response):
            return body
        filename, size, content_type = body.get("filename"), body.get("size"), body.get("content_type")
        if not isinstance(filename, str) or not filename.strip():
            return _error(400, "Invalid request parameters: filename is required")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return _error(400, "Invalid request parameters: size must be the file's size in bytes (an integer >= 0)")
        if content_type is not None and not isinstance(content_type, str):
            return _error(400, "Invalid request parameters: content_type must be a string")
        content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        major = content_type.split("/", 1)[0]
        limit = UPLOAD_LIMITS.get(major)
        if limit is not None and size > limit:
            return _error(
                400, f"File too large: {major} uploads are limited to {limit // (1024 * 1024)} MB, got {size} bytes"
            )
        name, signature = self.state.new_upload_ticket(filename, size, content_type)
        base = _base_url(request)
        return _ok(
            {
                "download_url": f"{base}/_emulator/uploads/{name}",
                "upload": {
                    "method": "PUT",
                    "url": f"{base}/_emulator/uploads/{name}?signature={signature}",
                    "headers": {"Content-Type": content_type},
                },
                "filename": name.split("_", 1)[1],
                "size": size,
            }
        )

    async def upload_put(self, request: Request) -> Response:
        """Step two: the bytes, to the pre-signed URL (no auth; the key must never be sent here)."""
        name: str = request.path_params["name"]
        self.state.note_upload_put("authorization" in request.headers)
        early = await self._gate(request, "upload_put")  # faults only
        if early is not None:
            return early
        ticket = self.state.upload_ticket(name, request.query_params.get("signature", ""))
        if ticket is None:
            return _storage_error(403, "SignatureDoesNotMatch", "The URL is not a pre-signed upload URL of this ticket")
        if request.headers.get("content-type") != ticket.content_type:
            return _storage_error(
                403, "SignatureDoesNotMatch", f"Send the ticket's headers exactly: Content-Type {ticket.content_type}"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared != str(ticket.size):
            return _storage_error(400, "IncompleteBody", f"The ticket announced {ticket.size} bytes, not {declared}")
        path = self.state.upload_path(name)
        partial = path + ".part"
        received = 0
        handle = await asyncio.to_thread(open, partial, "wb")
        try:
            async for chunk in request.stream():  # streamed to disk: large files never sit in memory
                received += len(chunk)
                if received > ticket.size:
                    break
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        if received != ticket.size:
            await asyncio.to_thread(Path(partial).unlink, True)
            return _storage_error(400, "IncompleteBody", f"The ticket announced {ticket.size} bytes, got {received}")
        await asyncio.to_thread(Path(partial).replace, path)
        self.state.finish_upload(name, path)
        return Response(b"", status_code=200)

    # -- files (public, like a CDN: no auth) -------------------------------------------

    async def files(self, request: Request) -> Response:
        stem, _, ext = request.path_params["name"].rpartition(".")
        prediction_id, _, index = stem.rpartition("_")
        prediction = self.state.predictions.get(prediction_id)
        if (
            prediction is None
            or prediction.ext != ext
            or not index.isdigit()
            or int(index) >= prediction.num_outputs
            or prediction.status(time.time()) != "completed"
        ):
            return Response("Not Found", status_code=404, media_type="text/plain")
        # Drawn in a thread (once per output, then cached): other requests go on meanwhile.
        content = await asyncio.to_thread(_media.output_bytes, prediction_id, int(index), ext, prediction.inputs)
        return Response(content, media_type=_media.CONTENT_TYPES.get(ext, "application/octet-stream"))

    async def uploaded_file(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        path = self.state.uploads.get(name)
        if path is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        ticket = self.state.upload_tickets.get(name)
        media_type = ticket.content_type if ticket else mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type)

    # -- webhooks --------------------------------------------------------------------

    async def _deliver_webhook(self, prediction: Prediction, base: str) -> None:
        """Sleep until the prediction is terminal, then POST it once, signed; never raise."""
        now = await _finished(self.state, prediction)
        if self.state.predictions.get(prediction.id) is not prediction or prediction.deleted or not prediction.webhook:
            return  # deleted, or the emulator was reset
        body = _dumps(prediction.to_api(base, now))
        timestamp = str(int(time.time()))
        secret = self.state.webhook_secret.removeprefix("whsec_").encode()
        signed = f"{prediction.id}.{timestamp}.".encode() + body
        headers = {
            "Content-Type": JSON,
            "User-Agent": "wavespeed-emulator",
            "webhook-id": prediction.id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v3," + hmac.new(secret, signed, hashlib.sha256).hexdigest(),
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=_WEBHOOK_TIMEOUT) as session,
                session.post(prediction.webhook, data=body, headers=headers) as response,
            ):
                delivered = 200 <= response.status < 300
        except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError):
            delivered = False
        self.state.count_webhook(delivered)

    # -- control surface (no auth: loopback test tooling) -----------------------------------

    async def control(self, request: Request) -> Response:
        method: str = request.path_params["method"]
        if method not in CONTROL_METHODS:
            return _control_error(404, "AttributeError", f"no control method {method!r}")
        raw = await request.body()
        try:
            kwargs = json.loads(raw) if raw.strip() else {}
        except ValueError:
            kwargs = None
        if not isinstance(kwargs, dict):
            return _control_error(400, "TypeError", "expected a JSON object of keyword arguments")
        try:
            result = getattr(self.state, method)(**kwargs)
        except KeyError as exc:
            return _control_error(404, "KeyError", str(exc.args[0]) if exc.args else method)
        except (ValueError, TypeError) as exc:
            return _control_error(400, type(exc).__name__, str(exc))
        return Response(_dumps({"result": result}), media_type=JSON)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)


def _epoch_ns(value: Any) -> int | None:
    """Read an ISO 8601 date-time as epoch nanoseconds (no zone: UTC); None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    nanos = 0
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)", text)
    if match:  # Python reads at most microseconds: keep the API's nanoseconds apart
        digits = match.group(2)[:9].ljust(9, "0")
        text, nanos = match.group(1) + match.group(3), int(digits)
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp()) * 1_000_000_000 + nanos


def _storage_error(status: int, code: str, message: str) -> Response:
    """Answer as an object store does a bad pre-signed request: XML, not the API's envelope."""
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status_code=status, media_type="application/xml")


def _control_error(status: int, kind: str, message: str) -> Response:
    return Response(_dumps({"error": {"type": kind, "message": message}}), status_code=status, media_type=JSON)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods answer in the API's envelope."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _error(status, "Not found" if status == 404 else _phrase(status))
