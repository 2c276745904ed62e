"""ASGI middlewares that check request bodies as they stream in, before BentoML stores them.

- :class:`BodySizeLimit`: BentoML (through Starlette) spools every multipart upload to disk
  before the API method runs, whatever its size, so the upload limit has to act on the byte
  stream: a declared ``Content-Length`` above the limit is answered at once, and a body without
  one (chunked) is counted as it arrives and cut off when it passes the limit (413).
- :class:`FileFieldGuard`: BentoML treats a *text* value of a file field as a URL and downloads
  it on the server, answering 500 when that fails. The service only takes uploaded files: a file
  field sent as text (a multipart part without ``filename``) gets 400 and a URL-encoded form 415,
  before BentoML sees them.

Both answer with the service's usual JSON error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from python_multipart.multipart import parse_options_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Room for the multipart boundaries, part headers and the small option fields.
FORM_OVERHEAD_BYTES = 64 * 1024
# Longest multipart part header block looked for across chunks.
MAX_PART_HEADER_BYTES = 16 * 1024


async def send_json_error(send: Send, status: int, message: str) -> None:
    """Answers ``{"error": message}`` with ``status`` and closes the connection."""
    body = json.dumps({"error": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


# A refusal found in a body chunk: (HTTP status, error message).
Refusal = tuple[int, str]


async def run_checking_body(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                            check: Callable[[bytes], Refusal | None]) -> None:
    """Runs ``app`` with every request body chunk passed through ``check`` first.

    When ``check`` returns a refusal the client gets it as a JSON error at once, the application
    sees a client that went away, and whatever it answers goes nowhere.
    """
    refused = False

    async def checking_receive() -> Message:
        nonlocal refused
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            refusal = check(message.get("body", b""))
            if refusal is not None:
                refused = True
                await send_json_error(send, *refusal)
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(message: Message) -> None:
        if not refused:
            await send(message)

    try:
        await app(scope, checking_receive, guarded_send)
    except Exception:
        # The application may fail on the body we cut short; the client has its answer.
        if not refused:
            raise

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

    def _refusal(self, size: str) -> Refusal:
        return 413, (f"the request body is {size}, the limit is {self.max_body_bytes:,} bytes "
                     f"(CLUDA_MAX_UPLOAD_BYTES plus form overhead)")

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
                    await send_json_error(send, *self._refusal(f"{declared:,} bytes"))
                    return
        received = 0

        def count(chunk: bytes) -> Refusal | None:
            nonlocal received
            received += len(chunk)
            return self._refusal(f"more than {limit:,} bytes") if received > limit else None

        await run_checking_body(self.app, scope, receive, send, count)


class MultipartHeaderScanner:
    """Finds the part headers of a ``multipart/form-data`` body fed in arbitrary chunks.

    Part contents pass through unexamined; between chunks at most one unfinished header block
    (or a delimiter's length of bytes) is kept.

    Args:
        boundary: the ``boundary`` parameter of the request's Content-Type.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._buffer = b""
        self._finished = False

    def feed(self, chunk: bytes) -> list[dict[bytes, bytes]]:
        """Consumes the next body bytes.

        Returns:
            The Content-Disposition parameters (``name``, ``filename``…) of each part whose
            header block completed within the bytes seen so far, in order; ``{}`` for a part
            without that header.

        Raises:
            ValueError: a part's header block is longer than ``MAX_PART_HEADER_BYTES``.
        """
        if self._finished:
            return []
        data = self._buffer + chunk
        found = []
        while True:
            start = data.find(self._delimiter)
            if start < 0:
                # Keep enough to recognise a delimiter split over two chunks.
                self._buffer = data[-len(self._delimiter):]
                return found
            after = start + len(self._delimiter)
            if data[after:after + 2] == b"--":
                self._finished = True
                self._buffer = b""
                return found
            end = data.find(b"\r\n\r\n", after)
            if end < 0:
                if len(data) - after > MAX_PART_HEADER_BYTES:
                    raise ValueError(f"a multipart part header is longer than "
                                     f"{MAX_PART_HEADER_BYTES:,} bytes")
                self._buffer = data[start:]
                return found
            found.append(_disposition_parameters(data[after:end]))
            data = data[end + 4:]


def _disposition_parameters(block: bytes) -> dict[bytes, bytes]:
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-disposition":
            return parse_options_header(value.strip())[1]
    return {}


def _header(scope: Scope, wanted: bytes) -> bytes:
    for name, value in scope.get("headers", []):
        if name.lower() == wanted:
            return value
    return b""


class FileFieldGuard:
    """Refuses requests to ``path`` that send a file field as anything but an uploaded file.

    A multipart part named one of ``fields`` without a ``filename`` parameter (Starlette's own
    test for an upload) gets 400; a URL-encoded form, which cannot carry files, gets 415.

    Args:
        app: the wrapped ASGI application.
        path: the API route that takes file fields.
        fields: names of its file fields.
    """

    def __init__(self, app: ASGIApp, path: str, fields: Iterable[str]) -> None:
        self.app = app
        self.path = path
        self.fields = {field.encode() for field in fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        media_type, options = parse_options_header(_header(scope, b"content-type"))
        if media_type == b"application/x-www-form-urlencoded":
            await send_json_error(send, 415, "a URL-encoded form cannot carry the image: send "
                                             "multipart/form-data with the image as a file "
                                             "upload (curl -F image=@photo.png)")
            return
        if media_type != b"multipart/form-data" or not options.get(b"boundary"):
            await self.app(scope, receive, send)
            return
        scanner = MultipartHeaderScanner(options[b"boundary"])

        def check(chunk: bytes) -> Refusal | None:
            try:
                parts = scanner.feed(chunk)
            except ValueError as error:
                return 400, str(error)
            for parameters in parts:
                name = parameters.get(b"name")
                if name in self.fields and b"filename" not in parameters:
                    field = name.decode(errors="replace")
                    return 400, (f"the form field {field!r} must be an uploaded file (a multipart "
                                 f"part with a filename), got a text value: send it as curl -F "
                                 f"{field}=@photo.png (the service downloads no URLs)")
            return None

        await run_checking_body(self.app, scope, receive, send, check)
