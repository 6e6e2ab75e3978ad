"""URLs of the example site."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("v1/json", views.json_document),
    path("v1/whoami", views.whoami),
]
