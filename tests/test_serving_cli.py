"""`d2d serve` as a user runs it: foreground process, answers `d2d chat --url`, stops cleanly on Ctrl-C.

The server is a subprocess with its own embedded Ray, so this module runs last
(`multinode`) after the shared Ray is shut down. Ctrl-C is emulated as a terminal
does it: SIGINT to the whole process group (Ray's own processes block SIGINT and
are stopped by the driver's shutdown).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT, free_port

pytestmark = pytest.mark.multinode

START_S, STOP_S = 240, 60
"""Bounds: deploy on a busy 2-core box (Ray start + four replicas), and shutdown after Ctrl-C."""


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def server(no_shared_ray, tmp_path):
    from serving.tiny_model import build_tiny_model

    model = build_tiny_model(str(tmp_path / "sft"))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "D2D_API_KEYS": ""}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "serve", "--model", model, "--port", str(port),
         "--run-dir", str(tmp_path / "run"), "--set", "guards=false"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_S
        while time.time() < deadline and proc.poll() is None:
            # Ready = the app answers and the CLI has reached its foreground loop (it prints its URL
            # after serve.run returns, which can be after /readyz first answers; Ctrl-C before that
            # interrupts the start-up: exit 130).
            log.seek(0)
            if "serving on http" in log.read() and ready(url):
                break
            time.sleep(0.5)
        else:
            log.seek(0)
            pytest.fail(f"d2d serve not ready (exit {proc.poll()}):\n{log.read()[-3000:]}")
        yield proc, url, port, log, env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_serve_answers_chat_cli_and_stops_cleanly_on_ctrl_c(server):
    proc, url, port, log, env = server
    chat = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "chat", "--url", url, "--max-new-tokens", "6", "--seed", "3"],
        input="Hello there\nAnd again\n/quit\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("assistant> ") == 2, chat.stdout + chat.stderr
    assert "[error" not in chat.stdout

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        code = proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"d2d serve still running {STOP_S}s after Ctrl-C")
    log.seek(0)
    out = log.read()
    assert code == 0, out[-3000:]
    assert "shutting down" in out and "Traceback" not in out
    assert port_is_free(port)
    deadline = time.time() + 30
    while group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not group_alive(proc.pid), "Ray processes of the server outlived it"


def test_keyless_serve_on_a_network_address_refuses_to_start(no_shared_ray, tmp_path):
    from serving.tiny_model import build_tiny_model

    model = build_tiny_model(str(tmp_path / "sft"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "D2D_API_KEYS": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "serve", "--model", model, "--host", "0.0.0.0",
         "--port", str(free_port()), "--run-dir", str(tmp_path / "run"), "--set", "guards=false"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=START_S, start_new_session=True)
    assert proc.returncode != 0
    assert "allow_anonymous" in proc.stdout + proc.stderr and "--allow-anonymous" in proc.stdout + proc.stderr
