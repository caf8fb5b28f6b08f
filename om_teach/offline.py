"""Keep notebooks off the network: only loopback and Unix sockets may be used.

Course notebooks must run without a network and download nothing, so the runner and the
notebook tests start kernels with :func:`offline_env`. Its ``sitecustomize`` installs
:func:`install` in every Python process started under it, the kernel's children too. The
guard is an audit hook (PEP 578): it refuses a name lookup or a connection to anything but
loopback before a packet leaves. It keeps honest code honest; it is no sandbox (the grader's
bubblewrap is).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

ENV_FLAG = "OM_TEACH_OFFLINE"
_SITE_DIR = Path(__file__).with_name("_offline")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class NetworkBlocked(PermissionError):
    """A process under the offline guard tried to reach beyond loopback."""


def is_loopback(host: str | bytes | None) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host is None:
        return True  # getaddrinfo(None, port) resolves a local bind address
    if isinstance(host, bytes):
        host = host.decode()
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple) -> None:
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event in ("socket.connect", "socket.sendto"):
        sock, address = args
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host = address[0]
    else:
        return
    if not is_loopback(host):
        raise NetworkBlocked(f"om-teach offline guard: no network beyond loopback ({host!r})")


def install() -> None:
    """Guard this process from now on. An audit hook cannot be removed once added."""
    sys.addaudithook(_audit)


def offline_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's) under which new Python processes are guarded."""
    env = dict(os.environ if env is None else env)
    paths = [str(_SITE_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env[ENV_FLAG] = "1"
    return env
