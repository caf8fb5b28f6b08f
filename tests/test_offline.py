"""The offline guard lets loopback through and refuses everything else before it is sent."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from om_teach import offline


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", None, b"::1"])
def test_loopback_hosts_pass(host):
    assert offline.is_loopback(host)


@pytest.mark.parametrize("host", ["example.org", "10.0.0.1", "192.168.1.1", "8.8.8.8", "::ffff:1"])
def test_other_hosts_are_not_loopback(host):
    assert not offline.is_loopback(host)


def test_audit_hook_refuses_a_connection_beyond_loopback():
    """The hook decides on the event's arguments: nothing is connected in this test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(offline.NetworkBlocked, match=r"203\.0\.113\.5"):
            offline._audit("socket.connect", (sock, ("203.0.113.5", 443)))
        offline._audit("socket.connect", (sock, ("127.0.0.1", 443)))
    with pytest.raises(offline.NetworkBlocked):
        offline._audit("socket.getaddrinfo", ("pypi.org", 443, 0, 0, 0))


def test_unix_sockets_pass():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        offline._audit("socket.connect", (sock, "/tmp/some.sock"))


def test_guarded_process_cannot_resolve_names_but_reaches_loopback():
    """A child started with offline_env() is guarded from its first line on."""
    code = (
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 0)); socket.create_connection(s.getsockname())\n"
        "try:\n    socket.getaddrinfo('pypi.org', 443)\nexcept PermissionError as e:\n"
        "    print('blocked', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=offline.offline_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "blocked om-teach offline guard" in out.stdout


def test_offline_env_keeps_existing_pythonpath():
    env = offline.offline_env({"PYTHONPATH": "/somewhere"})
    assert env["PYTHONPATH"].split(":")[-1] == "/somewhere"
    assert env[offline.ENV_FLAG] == "1"
