"""Where a store lives, as a zarr ``Store``: a local folder, or any object-store URL (``s3://``, ``gs://``,
``az://``, ``http(s)://``, ``memory://``; other fsspec protocols through zarr's fsspec store).

Object stores go through obstore (Rust I/O). Its local store writes every file to a staging name and
renames it into place (a reader never sees half a file) at about half the CPU per small file of zarr's
own ``LocalStore``, so local *writes* use it; local *reads* use zarr's ``LocalStore``, which, unlike
obstore's runtime, survives ``fork`` (PyTorch DataLoader workers). Either way the bytes are the same plain
zarr layout that ``zarr.open_group`` reads alone.

Credentials for object stores come from where their SDKs look: for S3 the ``AWS_*`` environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``), web identity and instance metadata, and, with boto3 installed, its whole chain
(``~/.aws/credentials``, ``~/.aws/config``, ``AWS_PROFILE``, SSO); for GCS ``GOOGLE_APPLICATION_CREDENTIALS``
or the gcloud application-default file; for Azure the ``AZURE_*`` variables. ``storage_options`` (the
CLI's ``--storage-option KEY=VALUE``) override them: obstore's config keys (``endpoint``, ``region``,
``access_key_id``, ...) and client options (``allow_http``, ``timeout``, ``connect_timeout``, ...).

Requests to an object store are retried with exponential backoff (obstore's retry policy: connection errors,
timeouts and 5xx answers, reads and writes alike) for up to ``retry_timeout`` seconds (default 180; at most
``max_retries`` tries, default 100, and waits of at most ``max_backoff`` seconds, default 15), so a run rides
out a server restart or a stall of a minute or two. The first contact of a command (``first_contact=True``:
does the store exist?) retries briefly instead, so a wrong URL fails in seconds, before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import zarr
from zarr.storage import ObjectStore, WrapperStore

from .errors import StoreError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_OBSTORE_SCHEMES = {"s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https", "memory"}
#: obstore's HTTP client options (everything else in storage_options is store configuration).
CLIENT_OPTIONS = {
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type", "http1_only",
    "http2_only", "pool_idle_timeout", "pool_max_idle_per_host", "proxy_url", "timeout", "user_agent",
}
#: mvtools' own storage options: how long requests are retried (seconds; tries; the longest wait between two).
#: obstore draws each wait at random between 0.1 s and ``base`` x the previous one (capped at max_backoff): with
#: base 2 the waits hardly grow (25 retries against a refused connection took 15 s here), with base 3 they grow
#: ~1.5x per retry on average, so ``retry_timeout``, not the count, bounds how long a request is retried.
RETRY_DEFAULTS = {"retry_timeout": 180.0, "max_retries": 100, "max_backoff": 15.0}
BACKOFF_BASE = 3
#: the first request of a command: an endpoint that is down or wrong fails within seconds.
FIRST_CONTACT_RETRY = {"retry_timeout": 5.0, "max_retries": 2, "max_backoff": 1.0}


def scheme(location: str | os.PathLike) -> str | None:
    """The URL scheme of ``location`` (``s3``, ``gs``...), or None for a local path (or ``file://``)."""
    match = _SCHEME.match(os.fspath(location))
    return None if match is None or match.group(1).lower() == "file" else match.group(1).lower()


def is_remote(location: str | os.PathLike) -> bool:
    return scheme(location) is not None


def local_path(location: str | os.PathLike) -> str:
    location = os.fspath(location)
    return os.path.abspath(location[len("file://"):] if location.startswith("file://") else location)


def parse_storage_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["endpoint=http://...", "region=us-east-1"]`` -> dict; ``ValueError`` for an item without ``=``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--storage-option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


class SizeRecordingStore(WrapperStore):
    """A store that remembers the size of every object written through it (until deleted), so that a
    writer knows what each array takes on storage without listing it afterwards."""

    def __init__(self, store: zarr.abc.store.Store):
        super().__init__(store)
        self.sizes: dict[str, int] = {}

    async def set(self, key: str, value) -> None:
        await self._store.set(key, value)
        self.sizes[key] = len(value)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self.sizes.pop(key, None)

    async def delete_dir(self, prefix: str) -> None:
        await self._store.delete_dir(prefix)
        self.forget(prefix)

    def recorded(self, prefix: str) -> dict[str, int]:
        """Sizes of the objects written under ``prefix`` (a folder)."""
        prefix = prefix.rstrip("/") + "/"
        return {k: v for k, v in self.sizes.items() if k.startswith(prefix)}

    def forget(self, prefix: str) -> None:
        for key in self.recorded(prefix):
            del self.sizes[key]


def zarr_store(location: str | os.PathLike, *, read_only: bool = True,
               storage_options: Mapping[str, str] | None = None, first_contact: bool = False) -> zarr.abc.store.Store:
    """A zarr store at ``location`` (a local folder, created when writing, or a URL). Writable stores
    record the sizes of what they write (``SizeRecordingStore``). ``first_contact``: requests retried briefly
    (``FIRST_CONTACT_RETRY``), for the check that opens a command."""
    kind = scheme(location)
    if kind is None:
        path = local_path(location)
        if read_only:
            return zarr.storage.LocalStore(path, read_only=True)
        from obstore.store import LocalStore

        os.makedirs(path, exist_ok=True)
        store = ObjectStore(LocalStore(path, automatic_cleanup=True), read_only=False)  # no empty folders left
    elif kind in _OBSTORE_SCHEMES:
        store = ObjectStore(_object_store(os.fspath(location), dict(storage_options or {}), first_contact),
                            read_only=read_only)
    else:
        options = {k: v for k, v in (storage_options or {}).items() if k not in RETRY_DEFAULTS}
        store = zarr.storage.FsspecStore.from_url(os.fspath(location), storage_options=options, read_only=read_only)
    return store if read_only else SizeRecordingStore(store)


def open_root(location: str | os.PathLike, storage_options: Mapping[str, str] | None = None) -> zarr.Group:
    """The root group of the store at ``location``, read-only (what readers like the trainer open)."""
    return zarr.open_group(zarr_store(location, storage_options=storage_options), mode="r", zarr_format=3)


def retry_config(options: Mapping[str, str], first_contact: bool = False) -> dict:
    """obstore's ``retry_config`` from the retry storage options (``RETRY_DEFAULTS``); a ``StoreError``-free
    ``ValueError`` for a value that is not a number."""
    given = {k: options[k] for k in RETRY_DEFAULTS if k in options}
    values = {**RETRY_DEFAULTS, **{k: _number(k, v) for k, v in given.items()}}
    if first_contact:  # never longer than the user's own retry setting
        values = {k: min(v, values[k]) for k, v in FIRST_CONTACT_RETRY.items()}
    return {"max_retries": int(values["max_retries"]), "retry_timeout": _seconds(values["retry_timeout"]),
            "backoff": {"init_backoff": _seconds(0.1), "max_backoff": _seconds(values["max_backoff"]),
                        "base": BACKOFF_BASE}}


def _number(key: str, value) -> float:
    try:
        number = float(str(value).strip().removesuffix("s"))
    except ValueError:
        raise ValueError(f"--storage-option {key}={value}: expected a number (seconds; tries for max_retries)"
                         ) from None
    if number < 0:
        raise ValueError(f"--storage-option {key}={value}: must not be negative")
    return number


def _object_store(url: str, options: dict[str, str], first_contact: bool = False):
    from obstore.store import from_url

    try:
        retry = retry_config(options, first_contact)
    except ValueError as e:
        raise StoreError(url, str(e)) from None
    options = {k: v for k, v in options.items() if k not in RETRY_DEFAULTS}
    client = {k: _value(v) for k, v in options.items() if k in CLIENT_OPTIONS}
    config = {k: v for k, v in options.items() if k not in CLIENT_OPTIONS}
    endpoint = config.get("endpoint") or config.get("aws_endpoint") or os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        client.setdefault("allow_http", True)  # an S3-compatible server on a private network, e.g. MinIO
    client.setdefault("connect_timeout", "10s")
    kwargs = {"config": config or None, "client_options": client, "retry_config": retry}
    if scheme(url) in ("s3", "s3a") and not _aws_keys_given(config):
        provider = _boto3_credentials()
        if provider is not None:
            kwargs["credential_provider"] = provider
    try:
        return from_url(url, **kwargs)
    except Exception as e:  # obstore reports a bad URL or an unknown option as a configuration error
        raise StoreError(url, f"cannot use this location ({_first_line(e)})") from None


def _aws_keys_given(config: Mapping) -> bool:
    keys = {k.lower().removeprefix("aws_") for k in config}
    return "access_key_id" in keys or "skip_signature" in keys or bool(os.environ.get("AWS_ACCESS_KEY_ID"))


def _boto3_credentials():
    """boto3's credential chain (config files, profiles, SSO), when boto3 is installed and finds any."""
    try:
        import boto3  # noqa: F401
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    try:
        return Boto3CredentialProvider()
    except Exception:  # no credentials anywhere: obstore's own chain (instance metadata...) decides
        return None


def _value(text: str):
    return {"true": True, "false": False}.get(text.lower(), text) if isinstance(text, str) else text


def _seconds(n: float):
    from datetime import timedelta

    return timedelta(seconds=n)


_RETRIES = re.compile(r" in ([0-9.]+)(ms|µs|s), after (\d+) retries")
_SERVER_ERROR = re.compile(r"status code: (5\d\d [A-Za-z ]+?)(?::|$)", re.MULTILINE)


def _retried(text: str) -> str:
    """", after N retries over T s" when obstore says it retried (its message carries both), else ""."""
    match = _RETRIES.search(text)
    if match is None or match.group(3) == "0":
        return ""
    scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[match.group(2)]
    return f", after {match.group(3)} retries over {float(match.group(1)) * scale:.0f} s"


def describe(error: BaseException) -> str:
    """One line saying why an object-store call failed, for a user to act on: the store refused the credentials
    or denied access, the endpoint refused connections or has no address (down, wrong URL), or it stalled (no
    answer within the request timeout), or it answered with a server error (5xx), with the retries spent when there
    were any."""
    name = type(error).__name__
    text = str(error)
    if name == "UnauthenticatedError" or any(code in text for code in (
            "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "401 Unauthorized")):
        return ("access denied: the credentials were refused (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "the profile)")
    if name == "PermissionDeniedError" or "403" in text:
        return ("access denied (403): wrong credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile), "
                "or a bucket that does not exist or that these credentials may not use")
    if name == "NotFoundError" or "NoSuchBucket" in text:
        return "not found: no such bucket or container"
    retried = _retried(text)
    if "kind: Timeout" in text or "operation timed out" in text.lower():
        return (f"stalled: the endpoint accepted the connection but did not answer within the request timeout"
                f"{retried} (--storage-option timeout=..., retry_timeout=... wait longer)")
    if "ConnectionRefused" in text or "connection refused" in text.lower():
        return (f"connection refused: cannot reach the endpoint{retried} (is the URL or --storage-option "
                f"endpoint=... right, is it up?)")
    status = _SERVER_ERROR.search(text)
    if status is not None:
        return (f"server error: the endpoint answered {status.group(1)}{retried} (a server restarting or failing: "
                f"retry_timeout=... waits longer)")
    if "dns error" in text.lower() or "failed to lookup address" in text.lower():
        return (f"unknown host: cannot reach the endpoint{retried} (is the URL or --storage-option endpoint=... "
                f"right?)")
    if "error sending request" in text or "connect" in text.lower():
        return f"cannot reach the endpoint{retried} (is the URL or --storage-option endpoint=... right, is it up?)"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
