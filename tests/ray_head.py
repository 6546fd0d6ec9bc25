"""A real Ray head on 127.0.0.1 for the tests (the scan executor's and the Ray Data LLM engine's)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def ray_head(python: str, env: dict[str, str] | None = None, prefix: str = "ptr"):
    """Start ``ray start --head`` of ``python``'s Ray (2 CPUs, its own temp dir) and wait until a driver can join;
    yields ``{"python", "address", "temp", "env"}``; stops the head and its workers (one process group) after.

    ``RAY_AUTH_MODE=disabled`` in the head's and the drivers' environment: `ray start` turns token auth on by
    itself when ~/.ray/auth_token exists (another Ray run may leave one), and drivers then need the same setting.
    """
    ray = Path(python).parent / "ray"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
                             "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=env)
    try:
        deadline = time.time() + 180
        while not list(Path(temp).glob("session_latest/logs/raylet.out")):
            assert head.poll() is None, head.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "ray start took over 3 minutes"
            time.sleep(0.5)
        probe = f"import ray; ray.init(address='127.0.0.1:{port}'); ray.shutdown()"
        while subprocess.run([python, "-c", probe], capture_output=True, env=env, timeout=120).returncode != 0:
            assert head.poll() is None, head.stderr.read().decode()[-2000:]  # a driver can join: the head is up
            assert time.time() < deadline, "the Ray head did not accept a driver within 3 minutes"
            time.sleep(1)
        yield {"python": python, "address": f"127.0.0.1:{port}", "temp": Path(temp), "env": env}
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(head.pid, sig)  # raylet, GCS and workers share the head's process group
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(temp, ignore_errors=True)
