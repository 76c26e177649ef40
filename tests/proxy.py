"""An HTTP/1.1 proxy on 127.0.0.1 in front of an S3 server, for tests and benchmarks: it counts the requests and
the response body bytes that pass, and can hold each request ``delay`` seconds before forwarding it (a round
trip's latency, as a store far away would add). Clients talk to it as to the server (``endpoint``); signed
requests stay valid because the Host header they were signed with is forwarded unchanged.

    with Proxy(upstream="http://127.0.0.1:8333", delay=0.01) as proxy:
        ...  # endpoint=proxy.endpoint
        proxy.requests, proxy.nbytes, proxy.log  # (method, path, Range header) of every request
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse


class Proxy:
    """Forwards every connection to ``upstream`` on a thread of its own; ``reset()`` zeroes the counts."""

    def __init__(self, upstream: str, delay: float = 0.0):
        url = urllib.parse.urlsplit(upstream)
        self.upstream = (url.hostname, url.port)
        self.delay = delay
        self.log: list[tuple[str, str, str | None]] = []
        self.nbytes = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3-proxy", daemon=True)
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        return len(self.log)

    def reset(self) -> None:
        with self._lock:
            self.log, self.nbytes = [], 0

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stop.wait()
        server.close()
        connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        try:
            while True:
                head = await _head(client_reader)
                if head is None:
                    return
                request_line, headers = _parse(head)
                body = await _body(client_reader, headers)
                method, target = request_line.split(" ")[:2]
                if self.delay:
                    await asyncio.sleep(self.delay)
                with self._lock:
                    self.log.append((method, urllib.parse.unquote(target.split("?")[0]), headers.get("range")))
                upstream_writer.write(head + body)
                await upstream_writer.drain()
                response_head = await _head(upstream_reader)
                if response_head is None:
                    return
                _, response_headers = _parse(response_head)
                payload = b"" if method == "HEAD" else await _body(upstream_reader, response_headers)
                with self._lock:
                    self.nbytes += len(payload)
                client_writer.write(response_head + payload)
                await client_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):  # closed, or shut down
            return
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()


async def _head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None


def _parse(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """A message body as sent: by Content-Length, or chunked (returned with its framing)."""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            out += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return out
    return b""
