"""The few HTML pages of the SMART client (Jinja2, autoescaped): messages and the patient page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment, select_autoescape

__all__ = ["message_page", "patient_display", "patient_page"]

_TEMPLATES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · CareCoord</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:48rem;color:#1b1b1b}
.banner{border:1px solid #888;background:#f3f6fa;padding:.75rem 1rem;border-radius:4px}
dt{font-weight:600}dd{margin:0 0 .5rem 0}
</style></head>
<body>{% block body %}{% endblock %}</body></html>""",
    "message.html": """{% extends "base.html" %}{% block body %}
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% if connections %}<p>Sign in through your EHR:</p><ul>
{% for name in connections %}<li><a href="/login?ehr={{ name | urlencode }}">{{ name }}</a></li>
{% endfor %}</ul>{% endif %}
{% endblock %}""",
    "patient.html": """{% extends "base.html" %}{% block body %}
{% if banner %}<div class="banner" role="banner" id="patient-banner">
<strong>{{ patient.name }}</strong> · born {{ patient.birth_date }} · id {{ patient.id }}
</div>{% endif %}
<h1>Patient</h1>
<dl>
<dt>Name</dt><dd id="patient-name">{{ patient.name }}</dd>
<dt>Birth date</dt><dd id="patient-birth-date">{{ patient.birth_date }}</dd>
<dt>Id</dt><dd id="patient-id">{{ patient.id }}</dd>
</dl>
<form method="post" action="/logout"><button type="submit">Sign out</button></form>
{% endblock %}""",
}

_env = Environment(
    loader=DictLoader(_TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
)

#: Pages may carry PHI or one-time codes in their URL: never cache them, never leak the Referer.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def message_page(
    title: str, message: str, *, status: int, connections: Sequence[str] = ()
) -> HTMLResponse:
    """A short page with a title and one sentence (and sign-in links when given)."""
    html = _env.get_template("message.html").render(
        title=title, message=message, connections=list(connections)
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _name(resource: dict[str, Any]) -> str:
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    official = [n for n in names if n.get("use") == "official"] or names
    if not official:
        return "(no name)"
    name = official[0]
    if isinstance(name.get("text"), str) and name["text"].strip():
        return str(name["text"]).strip()
    given = " ".join(str(g) for g in name.get("given") or [])
    return " ".join(p for p in (given, str(name.get("family") or "")) if p) or "(no name)"


def patient_display(resource: dict[str, Any]) -> dict[str, str]:
    """Name, birth date and id of a Patient resource, for display."""
    return {
        "name": _name(resource),
        "birth_date": str(resource.get("birthDate") or "unknown"),
        "id": str(resource.get("id") or ""),
    }


def patient_page(resource: dict[str, Any], *, banner: bool) -> HTMLResponse:
    """The launch patient's page (with a banner when the EHR asks for one)."""
    html = _env.get_template("patient.html").render(
        title="Patient", patient=patient_display(resource), banner=banner
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)
