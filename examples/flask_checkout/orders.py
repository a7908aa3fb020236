"""The shop's own table (in the public schema; gen_durable keeps to its own schema)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CREATE_LOCK = 7_340_001
"""Advisory lock key: the app and the worker may both create the table at start-up."""


class Base(DeclarativeBase):
    pass


class Order(Base):
    """An order: ``new`` -> ``reserved`` -> ``shipped``, or ``expired`` if never paid."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str]
    quantity: Mapped[int]
    amount: Mapped[int]  # cents
    status: Mapped[str] = mapped_column(default="new")
    paid: Mapped[int | None]  # cents, once the payment arrived
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "sku": self.sku,
            "quantity": self.quantity,
            "amount": self.amount,
            "status": self.status,
            "paid": self.paid,
        }


def create_tables(engine: Engine) -> None:
    """Create the shop's table if it is missing (a real shop has a migration for this)."""
    with engine.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(CREATE_LOCK)))
        Base.metadata.create_all(conn)
