"""The shop's own table, a Django model (in the public schema; gen_durable keeps to its own)."""

from __future__ import annotations

from datetime import datetime

from django.db import models


class Order(models.Model):
    """An order: ``new`` -> ``reserved`` -> ``shipped``, or ``expired`` if never paid."""

    id: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    sku: models.TextField[str, str] = models.TextField()
    quantity: models.IntegerField[int, int] = models.IntegerField()
    amount: models.IntegerField[int, int] = models.IntegerField()  # cents
    status: models.TextField[str, str] = models.TextField(default="new")
    paid: models.IntegerField[int | None, int | None] = models.IntegerField(null=True)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "shop_order"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "sku": self.sku,
            "quantity": self.quantity,
            "amount": self.amount,
            "status": self.status,
            "paid": self.paid,
        }
