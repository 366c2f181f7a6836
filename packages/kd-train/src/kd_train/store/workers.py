"""Who holds a reservation, and whether that worker is still alive.

A reservation records its worker's *host identity* (host name, boot id and PID namespace,
so that two containers sharing a host name are not confused) and process id. A worker
on the same host identity can tell for sure that a process is gone; any other worker
only knows that the reservation's lease has run out.

>>> import os
>>> from kd_train.store.workers import host_identity, process_alive
>>> process_alive(host_identity(), os.getpid())
True
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path


@cache
def host_identity() -> str:
    """This process's host identity: ``hostname|boot id|pid namespace`` (parts it can read)."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        parts.append("-")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("-")
    return "|".join(parts)


def process_alive(host: str | None, pid: int | None) -> bool | None:
    """Whether process ``pid`` of host identity ``host`` runs: ``None`` when we cannot tell.

    Only a process of this host identity can be checked. A zombie (killed, not yet reaped)
    counts as gone. A reused pid reads as alive, which only delays a reclaim to the end of
    the lease.
    """
    if host is None or pid is None or host != host_identity() or pid <= 0:
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the command name in parentheses, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
