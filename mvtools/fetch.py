"""Byte ranges of a store's objects, many at once, from any process: the transport under ``mvtools.reader``.

A source answers a batch of ``Get`` requests concurrently (one round trip for the batch) with ``Got`` results,
or ``FileNotFoundError`` for an object that does not exist. Three sources:

- ``LocalFiles``: a folder, read with ``os.pread``.
- ``ObjectStoreSource``: an object-store URL through obstore, with the client ``mvtools.storage`` builds (same
  options, retries and credentials), one per process. obstore's Rust runtime does not survive ``fork``: a child
  forked while it ran waits forever on its first request (tokio-rs/tokio#4301; obstore 0.12 is not fork-safe).
  Such a child, e.g. a DataLoader worker started by the default ``fork``, sends its requests to a helper process
  of its own instead (``helper_main``, started on first use, gone when its parent goes), which runs
  obstore from a fresh start. Processes that were spawned, or forked before the runtime ran, use obstore directly.
- ``ZarrStoreSource``: any other zarr store (fsspec protocols), through its ranged ``get``.

Every source counts the requests it made and the bytes it received (``requests``, ``nbytes``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import StoreError


@dataclass(frozen=True)
class Get:
    """Bytes of object ``path``: all of it; [start, stop); or its last ``suffix`` bytes."""

    path: str
    start: int | None = None
    stop: int | None = None
    suffix: int | None = None


@dataclass(frozen=True)
class Got:
    data: bytes | memoryview
    size: int | None = None  # the whole object's size, where the answer says it (whole objects and suffixes)


Result = Got | FileNotFoundError


class Source:
    """Where a store's bytes come from. ``gap``: bytes a reader may read in vain to merge two ranges into one
    request (what one more request costs, in bytes)."""

    gap = 0

    def __init__(self, location: str):
        self.location = location
        self.requests = 0
        self.nbytes = 0

    async def fetch(self, gets: Sequence[Get]) -> list[Result]:
        """The answers to ``gets``, in order, fetched concurrently."""
        results = await self._fetch(list(gets))
        self.requests += len(gets)
        self.nbytes += sum(len(r.data) for r in results if isinstance(r, Got))
        return results

    async def _fetch(self, gets: list[Get]) -> list[Result]:
        raise NotImplementedError


class LocalFiles(Source):
    """A store in a local folder: ``os.pread`` (a request costs a system call, so ranges are not merged)."""

    def __init__(self, root: str):
        super().__init__(root)
        self.root = root

    async def _fetch(self, gets: list[Get]) -> list[Result]:
        return [self._get(g) for g in gets]

    def _get(self, get: Get) -> Result:
        try:
            fd = os.open(os.path.join(self.root, get.path), os.O_RDONLY)
        except FileNotFoundError as e:
            return e
        try:
            size = os.fstat(fd).st_size
            if get.suffix is not None:
                start, stop = max(size - get.suffix, 0), size
            elif get.start is None:
                start, stop = 0, size
            else:
                start, stop = get.start, min(get.stop, size)
            return Got(os.pread(fd, max(stop - start, 0), start), size)
        finally:
            os.close(fd)


def _is_missing(error: BaseException) -> bool:
    from obstore.exceptions import NotFoundError

    return isinstance(error, (FileNotFoundError, NotFoundError))


async def _obstore_get(store, get: Get) -> Got:
    import obstore

    if get.start is not None:
        return Got(await obstore.get_range_async(store, get.path, start=get.start, end=get.stop))
    options = {"range": {"suffix": get.suffix}} if get.suffix is not None else None
    answer = await obstore.get_async(store, get.path, options=options)
    return Got(await answer.bytes_async(), int(answer.meta["size"]))


async def obstore_fetch(store, gets: Sequence[Get]) -> list[Got | BaseException]:
    """``gets`` on an obstore store, concurrently (one request each: obstore's ``get_ranges`` would merge ranges
    by its own rule); failures are returned, not raised."""
    return list(await asyncio.gather(*(_obstore_get(store, g) for g in gets), return_exceptions=True))


class ObjectStoreSource(Source):
    """A store at an object-store URL: obstore in this process, or, in a child forked while obstore's runtime
    ran, in a helper process of its own. Requests cost a round trip: ranges up to 1 MiB apart are merged."""

    gap = 1 << 20

    def __init__(self, url: str, storage_options: Mapping[str, str] | None = None):
        super().__init__(url)
        self.options = dict(storage_options or {})
        self._pid, self._client = -1, None

    def __getstate__(self):
        return {**self.__dict__, "_pid": -1, "_client": None}

    def client(self):
        """This process's client: an obstore store, or a ``Helper`` (opened on first use after a fork)."""
        with _client_lock:
            if self._pid != os.getpid():
                if forked_from_runtime():
                    self._client = Helper(self.location, self.options)
                else:
                    from .storage import _object_store

                    self._client = _object_store(self.location, self.options)
                self._pid = os.getpid()
            return self._client

    async def _fetch(self, gets: list[Get]) -> list[Result]:
        client = self.client()
        if isinstance(client, Helper):
            answers = await asyncio.wrap_future(client.submit(gets))
        else:
            answers = [_portable(a) for a in await obstore_fetch(client, gets)]
        return [self._result(a) for a in answers]

    def _result(self, answer) -> Result:
        if isinstance(answer, Got):
            return answer
        kind, message = answer
        if kind == "missing":
            return FileNotFoundError(message)
        raise StoreError(self.location, message)


def _portable(answer: Got | BaseException):
    """A ``Got``, or (kind, one line) for a failure: what crosses the helper's pipe (obstore's errors do not
    pickle)."""
    if isinstance(answer, Got):
        return Got(bytes(answer.data), answer.size)
    from .storage import describe

    return ("missing", str(answer).splitlines()[0][:300]) if _is_missing(answer) else ("error", describe(answer))


class ZarrStoreSource(Source):
    """Any other zarr store (fsspec protocols), through its ranged ``get``."""

    gap = 1 << 20

    def __init__(self, location: str, store):
        super().__init__(location)
        self.store = store

    async def _fetch(self, gets: list[Get]) -> list[Result]:
        from zarr.abc.store import RangeByteRequest, SuffixByteRequest
        from zarr.core.buffer import default_buffer_prototype

        async def one(get: Get) -> Result:
            request = (SuffixByteRequest(get.suffix) if get.suffix is not None else
                       RangeByteRequest(get.start, get.stop) if get.start is not None else None)
            buffer = await self.store.get(get.path, default_buffer_prototype(), request)
            if buffer is None:
                return FileNotFoundError(get.path)
            size = await self.store.getsize(get.path) if request is not None and get.start is None else None
            return Got(buffer.to_bytes(), size if request is not None else len(buffer))

        return list(await asyncio.gather(*(one(g) for g in gets)))


# Fork detection --------------------------------------------------------------------------------------------
_runtime_before_fork = False
_forked_from_runtime = False
_client_lock = threading.Lock()  # one client per source and process, whichever reading thread comes first


def _runtime_running() -> bool:
    """Whether obstore's runtime has started in this process (its tokio worker threads exist), or ran in the
    process this one was forked from (its threads did not come along)."""
    try:
        names = []
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read())
    except OSError:  # no /proc: assume the worst once obstore is loaded
        return "obstore" in sys.modules
    return _forked_from_runtime or any(name.startswith("tokio-") for name in names)


def _before_fork() -> None:
    global _runtime_before_fork
    _runtime_before_fork = _runtime_running()


def _after_fork_in_child() -> None:
    global _forked_from_runtime, _client_lock
    _forked_from_runtime = _runtime_before_fork
    _client_lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def forked_from_runtime() -> bool:
    """True in a process forked (directly or not) from one where obstore's runtime ran: obstore hangs here."""
    return _forked_from_runtime


# The helper process -----------------------------------------------------------------------------------------
class Helper:
    """A helper process (``helper_main``) answering fetch batches for this process over a pipe, several at
    once (batches carry ids; a thread here reads the answers). It ends when its pipe closes (this process
    exits) and ignores Ctrl-C, which its parent handles."""

    def __init__(self, url: str, options: Mapping[str, str]):
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.url = url
        command = [sys.executable, "-c", "from mvtools.fetch import helper_main; helper_main()"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self._send((url, dict(options)))
        threading.Thread(target=self._receive, name="mvtools-fetch-helper", daemon=True).start()

    def _send(self, message) -> None:
        pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.process.stdin.flush()

    def submit(self, gets: list[Get]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self.process.poll() is not None:
                raise StoreError(self.url, f"the fetch helper process exited (code {self.process.returncode})")
            request = next(self._ids)
            self._pending[request] = future
            self._send((request, gets))
        return future

    def _receive(self) -> None:
        try:
            while True:
                request, answers = _receive(self.process.stdout)
                with self._lock:
                    future = self._pending.pop(request)
                future.set_result(answers)
        except (EOFError, OSError, pickle.UnpicklingError):
            with self._lock:
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_exception(StoreError(self.url, "the fetch helper process exited"))


class _Messages(pickle.Unpickler):
    """The helper pipe's messages: plain values, ``Get`` and ``Got``; any other class is refused (nothing on the
    pipe can name code to run, even if the other end were not this package)."""

    ALLOWED = {("mvtools.fetch", "Get"), ("mvtools.fetch", "Got")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a fetch message")


def _receive(stream):
    """The next message on a helper pipe (``_Messages``)."""
    return _Messages(stream).load()


def serve(stdin, stdout) -> None:
    """The helper's side: the store's URL and options, then (id, gets) batches, each answered when done."""
    from .storage import _object_store

    url, options = _receive(stdin)
    store = _object_store(url, options)
    loop = asyncio.new_event_loop()
    lock = threading.Lock()

    async def answer(request: int, gets: list[Get]) -> None:
        answers = [_portable(a) for a in await obstore_fetch(store, gets)]
        with lock:
            pickle.dump((request, answers), stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()

    def read() -> None:
        try:
            while True:
                asyncio.run_coroutine_threadsafe(answer(*_receive(stdin)), loop)
        except (EOFError, OSError, pickle.UnpicklingError):
            loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=read, daemon=True).start()
    loop.run_forever()


def helper_main() -> None:
    """The helper process's entry (``Helper`` starts it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):
        serve(sys.stdin.buffer, sys.stdout.buffer)


# Sources per process ----------------------------------------------------------------------------------------
_SOURCES: dict[tuple, Source] = {}


def source_for(location: str, storage_options: Mapping[str, str] | None = None) -> Source:
    """The shared source of a store location (a folder or a URL) in this process."""
    from .storage import _OBSTORE_SCHEMES, local_path, scheme, zarr_store

    key = (location, tuple(sorted((storage_options or {}).items())))
    if key not in _SOURCES:
        kind = scheme(location)
        if kind is None:
            _SOURCES[key] = LocalFiles(local_path(location))
        elif kind in _OBSTORE_SCHEMES:
            _SOURCES[key] = ObjectStoreSource(location, storage_options)
        else:
            _SOURCES[key] = ZarrStoreSource(location, zarr_store(location, storage_options=storage_options))
    return _SOURCES[key]
