"""The shop's URLs, and the admin (where the flows are listed)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from .shop import views

urlpatterns = [
    path("checkout", views.checkout),
    path("webhooks/payments", views.payment_webhook),
    path("orders/<int:order_id>", views.order_status),
    path("admin/", admin.site.urls),
]
