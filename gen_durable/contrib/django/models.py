"""Read-only Django models over the gen_durable tables, for the admin.

Unmanaged: Django never creates, alters or writes these tables (``manage.py
gen_durable_migrate`` installs them); change instances through the client functions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models

from gen_durable.contrib.django.settings import options
from gen_durable.store.models import SCHEMA_TOKEN, validate_schema_name

OPERATE = "operate_instance"
"""The permission (``gen_durable.operate_instance``) the admin's retry and cancel need."""


def _table(name: str) -> str:
    # A quoted, schema-qualified name: Django leaves a name in double quotes as it is.
    schema = validate_schema_name(options()["SCHEMA"] or SCHEMA_TOKEN)
    return f'"{schema}"."{name}"'


class Instance(models.Model):
    """An FSM or job instance (``gd_instances``)."""

    id: models.BigIntegerField[int, int] = models.BigIntegerField(primary_key=True)
    fsm: models.TextField[str, str] = models.TextField()
    queue: models.TextField[str, str] = models.TextField()
    priority: models.SmallIntegerField[int, int] = models.SmallIntegerField()
    status: models.TextField[str, str] = models.TextField()
    step: models.TextField[str, str] = models.TextField()
    state: models.JSONField[Any, Any] = models.JSONField()
    version: models.IntegerField[int, int] = models.IntegerField()
    attempt: models.IntegerField[int, int] = models.IntegerField()
    max_attempts: models.IntegerField[int, int] = models.IntegerField()
    run_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(null=True)
    correlation_key: models.TextField[str | None, str | None] = models.TextField(null=True)
    concurrency_key: models.TextField[str | None, str | None] = models.TextField(null=True)
    parent_id: models.BigIntegerField[int | None, int | None] = models.BigIntegerField(null=True)
    result: models.JSONField[Any, Any] = models.JSONField(null=True)
    error: models.JSONField[Any, Any] = models.JSONField(null=True)
    lease_owner: models.TextField[str | None, str | None] = models.TextField(null=True)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    finished_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True
    )

    class Meta:
        managed = False
        db_table = _table("gd_instances")
        default_permissions = ("view",)
        permissions = [(OPERATE, "Can retry and cancel durable instances")]
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"{self.fsm} {self.id} ({self.status})"
