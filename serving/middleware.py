"""An ASGI middleware that refuses request bodies above a size limit before they are stored.

BentoML (through Starlette) spools every multipart upload to disk before the API method runs,
whatever its size, so the upload limit has to act on the byte stream: a declared
``Content-Length`` above the limit is answered at once, and a body without one (chunked) is
counted as it arrives and cut off when it passes the limit. The answer is the service's usual
JSON error with status 413.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Room for the multipart boundaries, part headers and the small option fields.
FORM_OVERHEAD_BYTES = 64 * 1024


class BodySizeLimit:
    """Answers 413 to HTTP requests whose body exceeds ``max_body_bytes``.

    Args:
        app: the wrapped ASGI application.
        max_body_bytes: largest accepted body, or a function returning it (read once, when the
            first request arrives, so it may depend on settings resolved after import).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int | Callable[[], int]) -> None:
        self.app = app
        self._limit_source = max_body_bytes
        self._limit: int | None = max_body_bytes if isinstance(max_body_bytes, int) else None

    @property
    def max_body_bytes(self) -> int:
        if self._limit is None:
            self._limit = int(self._limit_source())  # type: ignore[operator]
        return self._limit

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps({
            "error": f"the request body is {size}, the limit is {self.max_body_bytes:,} bytes "
                     f"(CLUDA_MAX_UPLOAD_BYTES plus form overhead)"
        }).encode()  # fmt: skip
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._refuse(send, f"{declared:,} bytes")
                    return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await self._refuse(send, f"more than {limit:,} bytes")
                    # The application sees a client that went away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            # Once we answered 413, whatever the application answers goes nowhere.
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # The application may fail on the body we cut short; the client has its answer.
            if not refused:
                raise
