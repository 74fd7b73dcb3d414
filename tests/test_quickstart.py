"""The README's run command: ``insurdesk serve --demo`` on a fresh embedded database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_demo_starts_on_a_fresh_machine(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSURDESK_")}
    env.update(
        {
            "INSURDESK_VAR_DIR": str(tmp_path / "var"),
            "INSURDESK_PORT": str(port),
            "INSURDESK_ISSUER": f"http://127.0.0.1:{port}",
        }
    )
    exe = Path(sys.executable).parent / "insurdesk"
    proc = subprocess.Popen(
        [str(exe), "serve", "--demo"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health.status_code == 200, "server did not start"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert (tmp_path / "var" / "insurdesk.db").exists()
        listing = httpx.get(f"http://127.0.0.1:{port}/api/v1/cases", timeout=5)
        assert listing.status_code == 401
        assert listing.headers["content-type"].startswith("application/problem+json")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert "huaxia" in output and "anxin" in output, output[-2000:]


def test_the_server_entry_point_freezes_its_start_up_heap(tmp_path: Path) -> None:
    """``insurdesk serve`` builds its app with ``app_from_env``, which moves the start-up heap
    out of the garbage collector's full passes (in a process of its own: tests build apps)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSURDESK_")}
    env["INSURDESK_VAR_DIR"] = str(tmp_path / "var")
    script = (
        "import gc\n"
        "from core.app import app_from_env\n"
        "assert gc.get_freeze_count() == 0\n"
        "app_from_env()\n"
        "print(gc.get_freeze_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) > 10_000
