"""A connection that one service thread keeps across its transactions.

The committer and each queue's pick loop run a transaction every few milliseconds under
load. Taking a connection from the engine's pool for each one (checkout, the pool's
events, the reset on checkin) cost about a fifth of such a transaction's client CPU; a
held connection skips all of that. It is taken from the same pool (the pool's size
already counts these threads), replaced after an error that invalidated it, and given
back when the thread stops. A ``session`` (set up on each new connection, undone before
it goes back) configures it for the one thread's statements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

from sqlalchemy import Connection, Engine


class Begins(Protocol):
    """What runs a transaction: an :class:`~sqlalchemy.Engine` or a held connection."""

    def begin(self) -> contextlib.AbstractContextManager[Connection]: ...


class HeldConnection:
    """A pooled connection kept between transactions by the one thread that uses it."""

    def __init__(
        self,
        engine: Engine,
        *,
        autocommit: bool = False,
        session: tuple[Callable[[Connection], None], Callable[[Connection], None]] | None = None,
    ) -> None:
        self._engine = engine
        self._autocommit = autocommit
        self._session = session
        self._conn: Connection | None = None

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction on the held connection (connecting first if it has none or lost
        it): committed when the block ends, rolled back if it raises."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            self.close()
            conn = self._connect()
        try:
            with conn.begin():
                yield conn
        except BaseException:
            if conn.invalidated:  # the connection is gone: the next transaction reconnects
                self.close()
            raise

    def _connect(self) -> Connection:
        conn = self._engine.connect()
        try:
            if self._autocommit:  # each statement its own transaction, committed as it ends
                conn.execution_options(isolation_level="AUTOCOMMIT")
            if self._session is not None:
                self._session[0](conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def around(self, loop: Callable[[], None]) -> Callable[[], None]:
        """``loop`` (the thread's whole life), then the connection given back."""

        def run() -> None:
            try:
                loop()
            finally:
                self.close()

        return run

    def close(self) -> None:
        """Give the connection back to the pool (the next transaction takes another), its
        session's settings undone first (a connection that cannot undo them is discarded)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._session is not None and not conn.closed and not conn.invalidated:
            try:
                self._session[1](conn)
            except Exception:
                with contextlib.suppress(Exception):
                    conn.invalidate()
        with contextlib.suppress(Exception):  # it may be gone with its server
            conn.close()
