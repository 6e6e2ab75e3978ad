"""Django admin pages for consumers, their basic-auth credentials and consumer groups.

Consumers: list, search (name, custom id, login), filters (by group too), credentials inline, a group.
Consumer groups: list (with how many consumers are in each), search, plugins as JSON; a group that
consumers are in is not deleted (Django's protected-objects page names them). Credentials: list,
search, filters (hash format: find the htpasswd imports worth a new password), a "Set password" page
and action. Passwords are typed in and stored as argon2id hashes; no page ever shows a hash, only its
format. Django's model permissions apply as usual (``view``/``add``/``change``/``delete`` of each model;
setting a password needs ``change`` on credentials).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .forms import CredentialForm, SetPasswordForm
from .models import BasicAuthCredential, Consumer, ConsumerGroup

__all__ = ["BasicAuthCredentialAdmin", "ConsumerAdmin", "ConsumerGroupAdmin", "CredentialInline"]


class CredentialInline(admin.TabularInline):  # type: ignore[type-arg]
    """A consumer's credentials, on the consumer's page."""

    model = BasicAuthCredential
    form = CredentialForm
    fields = ("ident", "username", "password", "password_format")
    readonly_fields = ("password_format",)
    extra = 0
    show_change_link = True

    @admin.display(description=_("stored as"))
    def password_format(self, credential: BasicAuthCredential) -> str:
        return _password_summary(credential)


def _password_summary(credential: BasicAuthCredential) -> str:
    """The stored password's format, never the hash: ``argon2id``, or a legacy form to replace."""
    kind = credential.password_format
    if not kind:
        text = gettext("not set")
    elif kind == "argon2id":
        text = kind
    else:
        text = gettext("%(format)s (imported: set a new password to store argon2id)") % {"format": kind}
    return format_html('<span class="password-format">{}</span>', text)


class HasCredentialsFilter(admin.SimpleListFilter):
    """Consumers with and without a login (those without serve only as anonymous consumers)."""

    title = _("credentials")
    parameter_name = "has_credentials"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", gettext("With credentials")), ("no", gettext("Without credentials"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(credentials__isnull=False).distinct()
        if self.value() == "no":
            return queryset.filter(credentials__isnull=True)
        return queryset


class PasswordFormatFilter(admin.SimpleListFilter):
    """Credentials by the format of their stored hash (argon2id, or one imported from htpasswd)."""

    title = _("password format")
    parameter_name = "password_format"
    _PREFIXES = (
        ("argon2id", "$argon2id$"),
        ("bcrypt", "$2"),
        ("apr1-md5", "$apr1$"),
        ("sha1", "{SHA}"),
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name, _prefix in self._PREFIXES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        prefix = dict(self._PREFIXES).get(self.value() or "")
        return queryset.filter(password_hash__startswith=prefix) if prefix else queryset


@admin.register(Consumer)
class ConsumerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Consumers with their credentials inline."""

    list_display = ("name", "custom_id", "group", "logins", "modified")
    list_filter = (HasCredentialsFilter, "group", "modified")
    list_select_related = ("group",)
    search_fields = ("name", "custom_id", "desc", "credentials__username")
    fields = ("name", "custom_id", "labels", "desc", "group")
    inlines = (CredentialInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Consumer]:
        return super().get_queryset(request).annotate(login_count=Count("credentials"))

    @admin.display(description=_("credentials"), ordering="login_count")
    def logins(self, consumer: Consumer) -> int:
        return int(getattr(consumer, "login_count", 0))


@admin.register(ConsumerGroup)
class ConsumerGroupAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Consumer groups, with their plugins as the configuration schema's JSON."""

    list_display = ("ident", "desc", "plugin_names", "members", "modified")
    search_fields = ("ident", "desc")
    fields = ("ident", "desc", "labels", "plugins")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConsumerGroup]:
        return super().get_queryset(request).annotate(member_count=Count("consumers"))

    @admin.display(description=_("plugins"))
    def plugin_names(self, group: ConsumerGroup) -> str:
        return ", ".join(group.plugins) if isinstance(group.plugins, dict) else ""

    @admin.display(description=_("consumers"), ordering="member_count")
    def members(self, group: ConsumerGroup) -> int:
        return int(getattr(group, "member_count", 0))


@admin.register(BasicAuthCredential)
class BasicAuthCredentialAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Credentials, with the "Set password" page and action."""

    form = CredentialForm
    list_display = ("username", "consumer", "ident", "password_format", "modified")
    list_filter = (PasswordFormatFilter, "modified")
    list_select_related = ("consumer",)
    search_fields = ("username", "ident", "consumer__name")
    autocomplete_fields = ("consumer",)
    fields = ("consumer", "ident", "username", "password", "password_format")
    readonly_fields = ("password_format",)
    actions = ("set_password",)

    @admin.display(description=_("stored as"))
    def password_format(self, credential: BasicAuthCredential) -> str:
        summary = _password_summary(credential)
        if credential.pk is None:
            return summary
        return format_html(
            '{} <a href="{}">{}</a>', summary, self._password_url(credential), gettext("Set password")
        )

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        own = [
            path(
                "<path:object_id>/password/",
                self.admin_site.admin_view(self.set_password_view),
                name=f"{opts.app_label}_{opts.model_name}_password",
            )
        ]
        return own + super().get_urls()

    @admin.action(description=_("Set password of the selected credential"), permissions=["change"])
    def set_password(
        self, request: HttpRequest, queryset: QuerySet[BasicAuthCredential]
    ) -> HttpResponse | None:
        """Open the "Set password" page of the one selected credential."""
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(
                request, gettext("Select exactly one credential to set its password."), messages.WARNING
            )
            return None
        return HttpResponseRedirect(self._password_url(selected[0]))

    def _password_url(self, credential: BasicAuthCredential) -> str:
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_password", args=(credential.pk,)
        )

    def set_password_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A new password for one credential, typed twice, stored as argon2id."""
        credential = self.get_object(request, unquote(object_id))
        if credential is None:
            raise Http404(gettext("No such credential."))
        if not self.has_change_permission(request, credential):
            raise PermissionDenied
        form = SetPasswordForm(credential, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            form.save()
            self.log_change(request, credential, gettext("Set a new password."))
            self.message_user(request, gettext("Password set."), messages.SUCCESS)
            opts = self.opts
            return HttpResponseRedirect(
                reverse(
                    f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=(credential.pk,)
                )
            )
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Set password: %(username)s") % {"username": credential.username},
            "form": form,
            "opts": self.opts,
            "original": credential,
        }
        return TemplateResponse(request, "admin/consumer_auth/basicauthcredential/set_password.html", context)
