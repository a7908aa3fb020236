"""A real ``gen-durable run`` in a subprocess, its stderr read as it comes, and HTTP gets."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from _support.helpers import TESTS


class RunProcess:
    """``python -m gen_durable run ARGS`` with ``env`` added, from the tests folder."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gen_durable", "run", *args],
            env=full,
            cwd=TESTS,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (waits for it, up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = re.search(pattern, line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or "<EOF>" in self.lines:
                    raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def port(self, what: str) -> int:
        """The port the run printed for ``metrics`` or ``health``."""
        return int(self.wait_line(rf"^{what}: http://[^:]+:(\d+)/").group(1))

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def get(port: int, path: str) -> tuple[int, str]:
    """GET ``http://127.0.0.1:PORT/PATH``: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
