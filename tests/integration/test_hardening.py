"""The containers run as docker-compose.yaml says: non-root, read-only, limited, no capabilities."""

from __future__ import annotations

import pytest

from stack import compose_file
from stack.docker_client import client


@pytest.mark.parametrize("role", ["server", "nginx"])
def test_limits_and_security_options_are_in_force(stack, role: str) -> None:
    """docker inspect shows the compose file's memory, CPU and PID limits and security options."""
    expected = compose_file.runtime_kwargs(role)
    attrs = getattr(stack, role).inspect()
    host = attrs["HostConfig"]
    assert host["Memory"] == expected["mem_limit"] > 0
    assert host["NanoCpus"] == expected["nano_cpus"] > 0
    assert host["PidsLimit"] == expected["pids_limit"] > 0
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert {u["Name"] for u in host["Ulimits"]} == {"nofile"}


@pytest.mark.parametrize("role", ["server", "nginx"])
def test_logs_rotate_and_never_block_the_process(stack, role: str) -> None:
    """Both containers log to rotated json-file logs, through a non-blocking ring buffer."""
    log_config = getattr(stack, role).inspect()["HostConfig"]["LogConfig"]
    assert log_config["Type"] == "json-file"
    assert log_config["Config"] == {
        "max-size": "10m",
        "max-file": "5",
        "mode": "non-blocking",
        "max-buffer-size": "4m",
    }


@pytest.mark.parametrize("role", ["server", "nginx"])
def test_processes_run_as_a_non_root_user(stack, role: str) -> None:
    """The image's user is a fixed non-zero UID, and the running processes are not root."""
    service = getattr(stack, role)
    user = service.inspect()["Config"]["User"]
    assert user and user.split(":")[0] not in ("0", "root")
    code, output = service.exec(["sh", "-c", "id -u"])
    assert code == 0 and output.strip() != "0"


@pytest.mark.parametrize("role", ["server", "nginx"])
def test_root_filesystem_is_not_writable(stack, role: str) -> None:
    """Writing outside the tmpfs fails; /tmp (tmpfs) is the only writable place."""
    service = getattr(stack, role)
    code, _ = service.exec(["sh", "-c", "echo x > /probe-write"])
    assert code != 0
    code, _ = service.exec(["sh", "-c", "echo x > /tmp/probe-write && rm /tmp/probe-write"])
    assert code == 0


def test_server_publishes_no_port_and_sits_only_on_the_internal_network(stack) -> None:
    """The server has no published port and is attached to the internal backend network only."""
    attrs = stack.server.inspect()
    assert not any(attrs["NetworkSettings"]["Ports"].values() or [None])
    assert set(attrs["NetworkSettings"]["Networks"]) == {stack.backend.name}
    assert client().networks.get(stack.backend.name).attrs["Internal"] is True
