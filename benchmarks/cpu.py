"""CPU time of processes: a Runner's (from ``wait4``) and the PostgreSQL server's (/proc).

- :func:`tree_cpu`: CPU seconds of a process and all its descendants so far, from
  ``/proc/<pid>/stat``: ``utime + stime`` (every thread, exited ones included) plus
  ``cutime + cstime`` (its children that exited and were waited for), summed over the tree.
  Resolution: one clock tick (``SC_CLK_TCK``, usually 10 ms) per process.
- :func:`find_postmaster`: the pid of the server's postmaster, when the server runs on this
  machine and its processes are visible here; else None and why. The server's CPU is then
  ``tree_cpu(postmaster)``: every backend and background process, live or exited.
- :func:`thread_cpu`: CPU seconds of this process's live threads so far, by kind (a Runner's
  worker threads summed as ``workers``), from ``/proc/self/task/<tid>/stat``.
- :func:`wait_cpu`: reap a child with ``os.wait4`` and return its CPU seconds (``ru_utime +
  ru_stime``, which include the children it waited for, as ``RUSAGE_CHILDREN`` would).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from sqlalchemy import Engine, text

TICK = os.sysconf("SC_CLK_TCK")
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Stat:
    comm: str
    ppid: int
    cpu: float
    """utime + stime + cutime + cstime, in seconds."""
    start: float
    """Start time in seconds since boot."""


def stat(pid: int) -> Stat | None:
    """``/proc/<pid>/stat``, or None if the process is gone (or not visible)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    head, _, tail = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()  # fields[0] is field 3 (state) of proc(5)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return Stat(
        comm, int(fields[1]), (utime + stime + cutime + cstime) / TICK, int(fields[19]) / TICK
    )


def all_stats() -> dict[int, Stat]:
    out: dict[int, Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (s := stat(int(name))) is not None:
            out[int(name)] = s
    return out


def descendants(root: int, stats: dict[int, Stat] | None = None) -> set[int]:
    """``root`` and every process below it."""
    stats = all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for pid, s in stats.items():
        children.setdefault(s.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found or (pid != root and pid not in stats):
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(root: int) -> float | None:
    """CPU seconds of ``root`` and its descendants (see the module's docstring)."""
    stats = all_stats()
    if root not in stats:
        return None
    return sum(stats[pid].cpu for pid in descendants(root, stats))


def _boot_time() -> float:
    with open("/proc/stat") as f:
        return float(next(ln.split()[1] for ln in f if ln.startswith("btime ")))


def find_postmaster(engine: Engine) -> tuple[int | None, str]:
    """(pid, how it was found) or (None, why not).

    The server must be on this host (a local address or a Unix socket); the parent of a
    backend of ours is the postmaster if it is a ``postgres`` process that started when
    ``pg_postmaster_start_time()`` says (so a pid from another pid namespace, e.g. a
    container's, is not taken for it).
    """
    host = engine.url.host or ""
    if host not in LOCAL_HOSTS and not host.startswith(("/", "127.")):
        return None, f"the server is on {host!r}, not this machine"
    with engine.connect() as conn:
        backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        started = float(
            conn.execute(text("SELECT extract(epoch FROM pg_postmaster_start_time())")).scalar_one()
        )
        mine = stat(backend)
    if mine is None or not mine.comm.startswith("postgres"):
        return None, f"backend pid {backend} is not a postgres process visible here"
    parent = stat(mine.ppid)
    if parent is None or not parent.comm.startswith(("postgres", "postmaster")):
        return None, f"the parent of backend {backend} is not a postgres process"
    if abs(_boot_time() + parent.start - started) > 2.0:
        return None, f"pid {mine.ppid} did not start when the postmaster did"
    return mine.ppid, f"parent of backend {backend}"


def wait_cpu(proc: subprocess.Popen[str], timeout: float) -> tuple[float, bool]:
    """Reap ``proc`` (SIGKILL to its process group after ``timeout`` s): (its CPU seconds
    from ``wait4``, whether it exited by itself)."""
    deadline = time.monotonic() + timeout
    clean = True
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            clean = False
            kill_group(proc)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, clean


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def thread_cpu() -> dict[str, float]:
    """CPU seconds (``utime + stime``) of this process's live threads so far, by thread
    name; a Runner's worker threads (``gd-worker-N``) are summed as ``workers``."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other")
        if name.startswith("gd-worker"):
            name = "workers"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out
