"""Which process holds a claim: "host:pid", and whether that process is gone.

Used by the prediction and training-run claims, so a row claimed by a killed process on this host
can be taken over (or marked failed) at once instead of after a timeout.
"""

from __future__ import annotations

import os
import socket


def process_identity() -> str:
    """host:pid of this process, stored on the rows it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_is_dead(identity: str) -> bool:
    """True when `identity` names a process on this host that no longer exists."""
    host, _, pid = identity.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host: only a time-based staleness check can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
