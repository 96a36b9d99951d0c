"""Emails are template triplets: emails/<name>-subject.txt, -body.txt and, when it exists,
-body.html. One helper builds them all."""

from __future__ import annotations

from django.core.mail import EmailMultiAlternatives
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string


def email_build(
    *, name: str, context: dict, to: list[str], headers: dict[str, str] | None = None
) -> EmailMultiAlternatives:
    subject = render_to_string(f"emails/{name}-subject.txt", context)
    subject = " ".join(subject.split())  # one line, whatever the template's whitespace
    body = render_to_string(f"emails/{name}-body.txt", context)
    message = EmailMultiAlternatives(subject=subject, body=body, to=to, headers=headers)
    try:
        html = render_to_string(f"emails/{name}-body.html", context)
    except TemplateDoesNotExist:
        return message
    message.attach_alternative(html, "text/html")
    return message
