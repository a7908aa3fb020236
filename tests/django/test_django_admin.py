"""The admin: instances read-only; retry and cancel only with ``gen_durable.operate_instance``."""

from __future__ import annotations

from typing import Any

from _support.helpers import snapshot
from django.contrib.auth.models import Permission, User
from django.test import TransactionTestCase, override_settings
from sqlalchemy import Engine, text

from examples.django_checkout.shop.flows import Checkout
from gen_durable.contrib import django as gd

CHANGELIST = "/admin/gen_durable/instance/"


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


class Admin(TransactionTestCase):
    engine: Engine

    def staff(self, *codenames: str) -> User:
        user = User.objects.create_user("ops", password="pw", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="gen_durable", codename__in=codenames)
        )
        self.client.force_login(user)
        return user

    def act(self, action: str, *ids: int) -> None:
        self.client.post(CHANGELIST, {"action": action, "_selected_action": [str(i) for i in ids]})

    def test_the_list_shows_instances_and_links_to_the_dashboard(self) -> None:
        flow = gd.insert(Checkout, state={"order": 1}, correlation_key="order:1")
        self.staff("view_instance")
        page = self.client.get(CHANGELIST).content.decode()
        assert "order:1" in page and f"/{flow}/" in page
        assert "Dashboard" not in page
        assert "cancel_instances" not in page  # no permission to operate: no such action
        with override_settings(GEN_DURABLE={"DASHBOARD_URL": "/durable/"}):
            page = self.client.get(CHANGELIST).content.decode()
        assert 'href="/durable/"' in page
        detail = self.client.get(f"{CHANGELIST}{flow}/change/")
        assert detail.status_code == 200 and "&quot;order&quot;: 1" in detail.content.decode()

    def test_without_the_permission_the_actions_change_nothing(self) -> None:
        flow = gd.insert(Checkout, state={"order": 2})
        self.staff("view_instance")
        self.act("cancel_instances", flow)
        assert snapshot(self.engine, flow).status == "available"

    def test_with_it_cancel_and_retry_act_and_record_the_user(self) -> None:
        one = gd.insert(Checkout, state={"order": 3})
        two = gd.insert(Checkout, state={"order": 4})
        self.staff("view_instance", "operate_instance")
        self.act("cancel_instances", one, two)
        assert {snapshot(self.engine, i).status for i in (one, two)} == {"cancelled"}
        self.act("retry_instances", one)
        assert snapshot(self.engine, one).status == "available"
        # retrying an instance that is not failed or cancelled is refused, and says so
        response = self.client.post(
            CHANGELIST, {"action": "retry_instances", "_selected_action": [str(one)]}, follow=True
        )
        shown = [str(m) for m in response.context["messages"]]
        assert any(m.startswith(f"not retried: {one} (") for m in shown), shown
        assert snapshot(self.engine, two).status == "cancelled"
        actors = rows(self.engine, "SELECT action, instance_id, actor FROM gen_durable.gd_audit")
        assert sorted(actors) == sorted(
            [
                ("cancel", one, "django:ops"),
                ("cancel", two, "django:ops"),
                ("retry", one, "django:ops"),
            ]
        )
