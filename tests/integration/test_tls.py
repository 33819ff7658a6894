"""wss:// on 8443 when a certificate and key are mounted (a self-signed one made here)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from websockets.sync.client import connect

from stack import docker_host


def self_signed(directory: Path) -> Path:
    """Write tls.crt and tls.key for CN=localhost (SAN 127.0.0.1 and where the Docker host
    is reached from here) into ``directory``."""
    host = docker_host.address()
    kind = "IP" if docker_host.publish_address() == host else "DNS"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName=DNS:localhost,IP:127.0.0.1,{kind}:{host}",
            "-keyout",
            str(directory / "tls.key"),
            "-out",
            str(directory / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    # The container's non-root NGINX must read them.
    for name in ("tls.key", "tls.crt"):
        (directory / name).chmod(0o644)
    directory.chmod(0o755)
    return directory / "tls.crt"


def test_wss_echo_with_a_mounted_certificate(make_stack, tmp_path: Path) -> None:
    """With tls.crt/tls.key mounted, NGINX serves wss:// and the echo is intact."""
    certificate = self_signed(tmp_path)
    stack = make_stack(tls_dir=tmp_path)
    context = ssl.create_default_context(cafile=str(certificate))
    with connect(stack.tls_url, ssl=context, open_timeout=10) as ws:
        ws.send("secret ✓")
        assert ws.recv(timeout=10) == "secret ✓"
        ws.send(bytes(range(256)))
        assert ws.recv(timeout=10) == bytes(range(256))
