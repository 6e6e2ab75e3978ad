"""Admin forms: a credential's password is typed in, hashed with argon2id on save, never shown again."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import BasicAuthCredential

__all__ = ["CredentialForm", "SetPasswordForm"]


def _password_field(label: Any, required: bool) -> forms.CharField:
    # render_value=False: a form shown again after an error never sends the password back.
    return forms.CharField(
        label=label,
        required=required,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class CredentialForm(forms.ModelForm):  # type: ignore[type-arg]  # django-stubs: ModelForm[Model]
    """A credential's fields and a write-only password (required for a new credential).

    Leaving the password empty on an existing credential keeps its current one.
    """

    password = _password_field(_("password"), required=False)

    class Meta:
        model = BasicAuthCredential
        fields = ("ident", "username")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.password_hash:
            self.fields["password"].help_text = _("Leave empty to keep the current password.")
        else:
            self.fields["password"].help_text = _("Stored as an argon2id hash, never shown again.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("password") and not self.instance.password_hash and not self.has_error("username"):
            self.add_error("password", _("A new credential needs a password."))
        return data

    def save(self, commit: bool = True) -> BasicAuthCredential:
        credential: BasicAuthCredential = super().save(commit=False)
        password = self.cleaned_data.get("password")
        if password:
            credential.set_password(password)
        if commit:
            credential.save()
        return credential


class SetPasswordForm(forms.Form):
    """The "set password" page: a new password, typed twice."""

    password1 = _password_field(_("New password"), required=True)
    password2 = _password_field(_("New password (again)"), required=True)

    def __init__(self, credential: BasicAuthCredential, *args: Any, **kwargs: Any) -> None:
        self.credential = credential
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = _("Stored as an argon2id hash, never shown again.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            self.add_error("password2", _("The two passwords differ."))
        return data

    def save(self) -> BasicAuthCredential:
        """Hash the new password into the credential and save it (its revision advances)."""
        self.credential.set_password(self.cleaned_data["password1"])
        self.credential.save(update_fields=["password_hash", "modified"])
        return self.credential
