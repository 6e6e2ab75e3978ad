"""URLs of the example site."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/json", views.json_document),
    path("v1/whoami", views.whoami),
]
