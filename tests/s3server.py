"""A real S3-compatible server for the tests: moto's HTTP server, run as a separate process.

Nothing is mocked in the test process: the code under test talks HTTP (boto3, signed requests)
to ``python -m moto.server`` (the ``moto_server`` command of ``moto[server]``, in the ``test``
extra) on a free loopback port. Without moto the tests that need it are skipped locally and
fail with ``CI=true``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from core.cases.storage import S3Storage, s3_client
from tests.conftest import CI

ACCESS_KEY = "insurdesk-test"
SECRET_KEY = "insurdesk-test-secret"
REGION = "us-east-1"


class S3Server:
    """``moto.server`` in a child process, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            reason = f"moto[server] is not installed (pip install -e '.[test]'): {exc}"
            if CI:
                pytest.fail(f"CI=true and no S3 test server: {reason}")
            pytest.skip(reason)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"the S3 test server exited: {err[-2000:]}")
            try:
                httpx.get(self.url + "/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail("the S3 test server did not start within 60 s")

    def client(self) -> Any:
        """A boto3 client of this server, built the way the platform builds its own."""
        return s3_client(
            endpoint_url=self.url,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket."""
        name = f"insurdesk-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def store(self, prefix: str = "attachments/") -> S3Storage:
        """An :class:`S3Storage` on a fresh bucket."""
        return S3Storage(self.client(), self.new_bucket(), prefix)

    def settings_env(self, bucket: str, prefix: str = "attachments/") -> dict[str, str]:
        """The ``INSURDESK_*`` variables that select this server."""
        return {
            "INSURDESK_ATTACHMENT_STORAGE": "s3",
            "INSURDESK_S3_BUCKET": bucket,
            "INSURDESK_S3_PREFIX": prefix,
            "INSURDESK_S3_ENDPOINT_URL": self.url,
            "INSURDESK_S3_REGION": REGION,
            "INSURDESK_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "INSURDESK_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def stop(self) -> None:
        """Terminate the server process."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
