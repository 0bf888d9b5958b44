"""Housekeeping jobs."""
from __future__ import annotations

import os
import socket


def ping(token: str) -> dict:
    """Round trip through a real worker: used by the health checks and the foundation test."""
    return {"token": token, "pid": os.getpid(), "host": socket.gethostname()}
