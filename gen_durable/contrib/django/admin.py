"""The admin: instances, read-only, with retry and cancel for those who may operate them.

The actions need the ``gen_durable.operate_instance`` permission; they run the client
functions in the request's transaction on Django's connection and record the user as
the actor. With ``GEN_DURABLE["DASHBOARD_URL"]`` set, the list links to the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from gen_durable import client
from gen_durable.contrib.django.connection import connection
from gen_durable.contrib.django.models import OPERATE, Instance
from gen_durable.contrib.django.settings import options
from gen_durable.errors import DurableError

_PERMISSION = f"gen_durable.{OPERATE}"

if TYPE_CHECKING:  # generic in django-stubs only
    _ModelAdmin = admin.ModelAdmin[Instance]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(Instance)
class InstanceAdmin(_ModelAdmin):
    """Instances by newest first; filter by status, queue and class; search by key."""

    list_display = (
        "id",
        "fsm",
        "status",
        "step",
        "correlation_key",
        "queue",
        "attempt",
        "updated_at",
    )
    list_filter = ("status", "queue", "fsm")
    search_fields = ("=id", "=correlation_key", "fsm")
    actions = ("retry_instances", "cancel_instances")
    show_full_result_count = False  # a count of a large table is a sequential scan

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Retry and cancel: ``gen_durable.operate_instance``."""
        # Custom user models need not have PermissionsMixin; the admin needs has_perm.
        has_perm = getattr(request.user, "has_perm", None)
        return callable(has_perm) and bool(has_perm(_PERMISSION))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {"dashboard_url": options()["DASHBOARD_URL"], **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    @admin.action(
        description="Retry the selected failed or cancelled instances", permissions=["operate"]
    )
    def retry_instances(self, request: HttpRequest, queryset: QuerySet[Instance]) -> None:
        self._operate(
            request,
            queryset,
            "retried",
            lambda conn, pk, actor: client.retry(conn, pk, actor=actor) == pk,
        )

    @admin.action(description="Cancel the selected instances", permissions=["operate"])
    def cancel_instances(self, request: HttpRequest, queryset: QuerySet[Instance]) -> None:
        self._operate(
            request,
            queryset,
            "cancelled",
            lambda conn, pk, actor: client.cancel(conn, pk, actor=actor),
        )

    def _operate(
        self,
        request: HttpRequest,
        queryset: QuerySet[Instance],
        done: str,
        act: Callable[[Any, int, str], bool],
    ) -> None:
        actor = f"django:{request.user.get_username()}"
        changed: list[str] = []
        refused: list[str] = []
        alias = options()["DATABASE"]
        with transaction.atomic(using=alias), connection(alias) as conn:
            for pk in queryset.values_list("pk", flat=True):
                try:
                    (changed if act(conn, pk, actor) else refused).append(f"{pk}")
                except DurableError as exc:  # it ran in a savepoint: the others go on
                    refused.append(f"{pk} ({exc})")
        if changed:
            self.message_user(request, f"{done}: {', '.join(changed)}", messages.SUCCESS)
        if refused:
            self.message_user(request, f"not {done}: {', '.join(refused)}", messages.WARNING)
