"""gen_durable in a Django project (the ``django`` extra; Django >= 5.2, psycopg 3).

Add ``"gen_durable.contrib.django"`` to ``INSTALLED_APPS``. The functions here are the
client API's, on Django's own connection: called inside ``transaction.atomic()`` they
write in that block's transaction, so a rollback of the block rolls them back and its
commit commits both. They never commit, roll back or close Django's connection. For a
database other than ``GEN_DURABLE["DATABASE"]``, or several calls on one connection,
use :func:`connection` with the client API itself::

    with transaction.atomic(using="orders"), connection("orders") as conn:
        durable.insert(conn, Checkout, state={"order": order.pk})

See docs/django.md.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from gen_durable import client
from gen_durable.client import Bind
from gen_durable.contrib.django.connection import connection

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["cancel", "connection", "get", "insert", "insert_all", "retry", "signal"]


def _on_django(fn: Callable[Concatenate[Bind, P], R]) -> Callable[P, R]:
    """``fn`` of the client API, on Django's connection instead of a ``bind``."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with connection() as conn:
            return fn(conn, *args, **kwargs)

    given = inspect.signature(fn)
    call.__signature__ = given.replace(  # type: ignore[attr-defined]
        parameters=list(given.parameters.values())[1:]
    )
    call.__doc__ = (
        f"``gen_durable.{fn.__name__}`` in Django's current transaction (on the "
        "``GEN_DURABLE['DATABASE']`` alias); the same arguments, without ``bind``.\n\n"
        f"{fn.__doc__ or ''}"
    )
    return call


insert = _on_django(client.insert)
insert_all = _on_django(client.insert_all)
signal = _on_django(client.signal)
cancel = _on_django(client.cancel)
retry = _on_django(client.retry)
get = _on_django(client.get)
