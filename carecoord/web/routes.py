"""Web screens: :func:`install` adds the pages under ``/app``, the vendored static files, the
security headers and the CSRF check; the routes only translate between forms and
:mod:`carecoord.web.screens` / :mod:`carecoord.web.services`.

Pages read through the store with the caller's AccessPolicy (a launch session's or a bearer
token's), so SMART scopes and the patient compartment apply, and each page's reads are audited
as one AuditEvent. Errors become pages or short messages, never PHI in logs.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast, get_args
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from carecoord.crypto import derive_key, load_secret_key
from carecoord.fhir.errors import (
    BusinessRule,
    Conflict,
    FhirError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    Unauthorized,
)
from carecoord.settings import Settings
from carecoord.smart.pages import PAGE_HEADERS, patient_display
from carecoord.smart.pages import patient_page as smart_patient_page
from carecoord.smart.routes import launch_patient
from carecoord.smart.sessions import SESSION_COOKIE
from carecoord.transitions.codes import CareRole
from carecoord.web import dashboard
from carecoord.web.charts import bar_chart, hbar_chart, line_chart
from carecoord.web.config import load_web_config
from carecoord.web.context import ScreenContext, WebState, screen_context
from carecoord.web.internal import internal_get
from carecoord.web.people import names_of
from carecoord.web.reads import ScreenReader
from carecoord.web.screens import (
    WorklistFilters,
    assignable_people,
    inbox_screen,
    patient_screen,
    risks_from_api,
    user_roles,
    worklist_screen,
)
from carecoord.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SecurityHeaders,
    is_cross_site,
    same_origin,
    valid_csrf,
)
from carecoord.web.services import Action, act_on_task, record_contact

__all__ = ["install", "router"]

log = logging.getLogger("carecoord.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NEXT = re.compile(r"^/app(/[A-Za-z0-9\-._/]*)?(\?[A-Za-z0-9\-._=&%]*)?$")
_MESSAGES = {
    "accept": "Task accepted.",
    "reject": "Task rejected.",
    "complete": "Task completed.",
    "hold": "Task put on hold.",
    "resume": "Task resumed.",
    "reassign": "Task reassigned.",
    "contact": "Contact attempt recorded.",
}
_ERRORS = {
    "conflict": "Someone changed this task in the meantime; the page now shows the latest.",
    "rule": "The task workflow does not allow that from the task's current status.",
    "forbidden": "You are not allowed to change this task.",
    "missing": "That task no longer exists.",
    "reason": "Please give a reason.",
    "owner": "Please choose whom to assign the task to.",
    "final": "This task is already closed.",
}

router = APIRouter(prefix="/app", include_in_schema=False)
T = TypeVar("T")


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def _connections(request: Request) -> list[str]:
    smart = getattr(request.app.state, "smart", None)
    return [c.name for c in smart.connections] if smart is not None else []


def _page(
    request: Request,
    template: str,
    ctx: ScreenContext | None,
    *,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    state = _state(request)
    values.setdefault("notice", None)
    values["notice"] = values["notice"] or _MESSAGES.get(request.query_params.get("done", ""))
    html = state.render(
        template,
        csrf=ctx.csrf if ctx else "",
        user=ctx.user if ctx else None,
        organisation=state.config.organisation,
        path=request.url.path,
        error=_ERRORS.get(request.query_params.get("error", "")),
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


async def _context(request: Request) -> ScreenContext | HTMLResponse:
    try:
        return await screen_context(request)
    except Unauthorized:
        return _page(
            request,
            "message.html",
            None,
            status=401,
            title="Not signed in",
            message="Open CareCoord from your EHR, or sign in through your EHR below.",
            connections=_connections(request),
        )


async def _read(
    request: Request, ctx: ScreenContext, interaction: str, work: Callable[[ScreenReader], T]
) -> T:
    reader = ScreenReader(request.app.state.store, ctx.policy)
    result = await run_in_threadpool(work, reader)
    await request.app.state.audit.on_read(ctx.policy, ctx.request_id, interaction, reader.rows)
    return result


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    """Links to the screens."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    return _page(request, "home.html", ctx, title="CareCoord")


@router.get("/patient", response_class=HTMLResponse)
async def launch_landing(request: Request) -> Response:
    """Where a SMART launch lands: the launch patient's page, else the user's own screen."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    if ctx.launch_patient:
        # The banner is the EHR's: demographics read with the session's token (refreshed when
        # needed); the checklist, risk, team and case are CareCoord's.
        found = await launch_patient(request)
        ehr: dict[str, Any] | None = None
        unreachable: Response | None = None
        if isinstance(found, dict):
            ehr = found
        elif found.status_code == 502:
            unreachable = found  # the EHR is down: CareCoord's own record still helps
        else:
            return found  # signed out, no patient in context, or the EHR session has ended
        notice = (
            "The EHR could not be reached: showing CareCoord's record." if unreachable else None
        )
        page = await _patient(request, ctx, ctx.launch_patient, ehr_patient=ehr, notice=notice)
        if page.status_code == 404:
            # Not (yet) in CareCoord, e.g. before the first sync: show what the EHR says.
            return unreachable or smart_patient_page(ehr or {}, banner=bool(ctx.banner))
        return page
    roles = await _read(request, ctx, "search-type", lambda r: user_roles(r, ctx.user))
    if CareRole.PCP in roles:
        return RedirectResponse("/app/inbox", status_code=303, headers=PAGE_HEADERS)
    if roles & {CareRole.NURSE_CASE_MANAGER, CareRole.SOCIAL_WORKER}:
        return RedirectResponse("/app/worklist", status_code=303, headers=PAGE_HEADERS)
    if CareRole.SUPERVISOR in roles:
        return RedirectResponse("/app/dashboard", status_code=303, headers=PAGE_HEADERS)
    return _page(request, "home.html", ctx, title="CareCoord")


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def patient_page(request: Request, patient_id: str) -> Response:
    """A patient's checklist, risk, care team, case and timeline."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    if not _ID.match(patient_id):
        return _not_found(request, ctx)
    return await _patient(request, ctx, patient_id)


def _not_found(request: Request, ctx: ScreenContext | None) -> HTMLResponse:
    return _page(
        request,
        "message.html",
        ctx,
        status=404,
        title="Not found",
        message="There is no such patient, or it is outside what you may see.",
        connections=[],
    )


async def _patient(
    request: Request,
    ctx: ScreenContext,
    patient_id: str,
    *,
    ehr_patient: dict[str, Any] | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    tz = _state(request).config.tz

    def load(reader: ScreenReader) -> tuple[Any, list[tuple[str, str]]]:
        screen = patient_screen(reader, patient_id, now=ctx.now, tz=tz)
        people = assignable_people(reader) if screen.found else []
        return screen, people

    screen, people = await _read(request, ctx, "read", load)
    if not screen.found:
        return _not_found(request, ctx)
    if ehr_patient is not None:
        shown = patient_display(ehr_patient)
        screen.patient = {
            **screen.patient,
            "name": shown["name"],
            "birth_date": shown["birth_date"],
        }
    api_risks = await internal_get(request, f"/api/patients/{patient_id}/readmission-risk")
    if api_risks is not None:
        screen.risks = risks_from_api(api_risks) or screen.risks
    pccm = await internal_get(request, f"/api/pccm/assignments/{patient_id}")
    return _page(
        request,
        "patient.html",
        ctx,
        title=screen.patient["name"],
        screen=screen,
        people=people,
        pccm=_pccm_view(pccm),
        banner=ctx.banner,
        here=f"/app/patients/{patient_id}",
        notice=notice,
    )


def _pccm_view(body: Any) -> dict[str, Any] | None:
    """``GET /api/pccm/assignments/{patient}`` as (pcp, rule, reasons), whatever its detail."""
    if isinstance(body, list):
        body = body[0] if body else None
    if not isinstance(body, dict):
        return None
    reasons = body.get("reasons") or body.get("reason") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    texts = [
        str(r.get("text") or r.get("reason") or r) if isinstance(r, dict) else str(r)
        for r in reasons
    ]
    pcp = body.get("pcp") or body.get("practitioner") or body.get("practitionerRole") or ""
    if isinstance(pcp, dict):
        pcp = pcp.get("display") or pcp.get("reference") or ""
    view = {"pcp": str(pcp), "rule": str(body.get("rule") or ""), "reasons": texts}
    return view if view["pcp"] or view["rule"] or texts else None


def _next(value: str | None, fallback: str) -> str:
    if value and _NEXT.match(value) and "//" not in value:
        return value
    return fallback


def _with(url: str, **params: str) -> str:
    base, _, query = url.partition("?")
    kept = [
        (k, v)
        for k, _, v in (p.partition("=") for p in query.split("&") if p)
        if k not in ("done", "error")
    ]
    return f"{base}?{urlencode([*kept, *params.items()])}"


async def _checked_form(request: Request) -> tuple[ScreenContext, dict[str, str]] | Response:
    """The form of a POST, after the CSRF and Origin checks (bearer-token callers need none)."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if "authorization" not in request.headers:
        own = f"{request.url.scheme}://{request.url.netloc}"
        origin = request.headers.get("origin")
        token = request.headers.get(CSRF_HEADER) or values.get(CSRF_FIELD)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not same_origin(origin, own) or not valid_csrf(_state(request).secret, cookie, token):
            log.warning("web form refused: CSRF check failed")
            return _page(
                request,
                "message.html",
                ctx,
                status=403,
                title="Form expired",
                message="This form could not be verified. Reload the page and try again.",
                connections=[],
            )
    return ctx, values


def _error_code(exc: Exception) -> str:
    if isinstance(exc, InvalidRequest):
        return "owner" if "owner" in exc.message or "assign" in exc.message else "reason"
    if isinstance(exc, PreconditionFailed | Conflict):
        return "conflict"
    if isinstance(exc, BusinessRule):
        return "rule"
    if isinstance(exc, Forbidden):
        return "forbidden"
    if isinstance(exc, NotFound):
        return "missing"
    return "rule"


@router.post("/tasks/{task_id}/action")
async def task_action(request: Request, task_id: str) -> Response:
    """One click on a Task: accept, reject (reason), complete, hold (reason), resume, reassign."""
    checked = await _checked_form(request)
    if isinstance(checked, Response):
        return checked
    ctx, form = checked
    back = _next(form.get("next"), "/app")
    action = form.get("action", "")
    if not _ID.match(task_id) or action not in get_args(Action):
        return RedirectResponse(_with(back, error="rule"), status_code=303, headers=PAGE_HEADERS)
    owner_ref = form.get("owner", "")
    owner = (
        owner_ref if re.match(r"^Practitioner(Role)?/[A-Za-z0-9\-.]{1,64}$", owner_ref) else None
    )
    version = form.get("version", "")
    try:
        await run_in_threadpool(
            lambda: act_on_task(
                request.app.state.store,
                policy=ctx.policy,
                task_id=task_id,
                action=cast(Action, action),
                version=int(version) if version.isdigit() else None,
                now=ctx.now,
                reason=form.get("reason"),
                owner=owner,
                audit=request.app.state.audit,
                request_id=ctx.request_id,
            )
        )
    except FhirError as exc:
        log.info("task action refused: %s", type(exc).__name__)
        return RedirectResponse(
            _with(back, error=_error_code(exc)), status_code=303, headers=PAGE_HEADERS
        )
    return RedirectResponse(_with(back, done=action), status_code=303, headers=PAGE_HEADERS)


@router.post("/tasks/{task_id}/contact")
async def contact_attempt(request: Request, task_id: str) -> Response:
    """Record a contact attempt (reached or not) on a contact Task."""
    checked = await _checked_form(request)
    if isinstance(checked, Response):
        return checked
    ctx, form = checked
    back = _next(form.get("next"), "/app")
    reached = form.get("outcome")
    if not _ID.match(task_id) or reached not in ("reached", "not-reached"):
        return RedirectResponse(_with(back, error="rule"), status_code=303, headers=PAGE_HEADERS)
    try:
        await run_in_threadpool(
            lambda: record_contact(
                request.app.state.store,
                policy=ctx.policy,
                task_id=task_id,
                reached=reached == "reached",
                note=form.get("note", ""),
                when=ctx.now,
                by=ctx.user,
                audit=request.app.state.audit,
                request_id=ctx.request_id,
            )
        )
    except FhirError as exc:
        log.info("contact attempt refused: %s", type(exc).__name__)
        return RedirectResponse(
            _with(back, error=_error_code(exc)), status_code=303, headers=PAGE_HEADERS
        )
    return RedirectResponse(_with(back, done="contact"), status_code=303, headers=PAGE_HEADERS)


@router.get("/worklist", response_class=HTMLResponse)
async def worklist(request: Request) -> Response:
    """The case manager's patients with open work: filters and sorting in the query string."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    filters = WorklistFilters(
        scope=cast(Any, _pick(request, "scope", ("mine", "all"), "mine" if ctx.user else "all")),
        due=cast(Any, _pick(request, "due", ("all", "today", "overdue", "week"), "all")),
        band=cast(Any, _pick(request, "band", ("any", "high", "moderate", "low"), "any")),
        sort=cast(Any, _pick(request, "sort", ("due", "name", "risk", "open"), "due")),
    )
    tz = _state(request).config.tz
    rows = await _read(
        request,
        ctx,
        "search-type",
        lambda r: worklist_screen(r, user=ctx.user, filters=filters, now=ctx.now, tz=tz),
    )
    template = "worklist_rows.html" if request.headers.get("hx-target") == "worklist" else None
    return _page(
        request,
        template or "worklist.html",
        ctx,
        title="Worklist",
        rows=rows,
        filters=filters,
    )


def _pick(request: Request, name: str, options: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    return value if value in options else default


@router.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request) -> Response:
    """The PCP's incoming tasks, new PCCM members and discharge summaries."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    tz = _state(request).config.tz
    box = await _read(
        request, ctx, "search-type", lambda r: inbox_screen(r, user=ctx.user, now=ctx.now, tz=tz)
    )
    return _page(request, "inbox.html", ctx, title="Inbox", inbox=box, here="/app/inbox")


async def _dashboard_data(request: Request, ctx: ScreenContext) -> dashboard.DashboardData:
    """The feature APIs' numbers where they answer, the rest computed from FHIR resources."""
    config = _state(request).config
    until = ctx.now.date()
    since = until - timedelta(days=365)
    metrics = await internal_get(
        request, f"/api/metrics/transitions?by=period&period=month&since={since}&until={until}"
    )
    caseload = await internal_get(request, "/api/caseloads")
    refs: list[str] = []
    if isinstance(caseload, dict):
        refs = [str(r.get("careManager")) for r in caseload.get("caseloads") or ()]

    def work(reader: ScreenReader) -> tuple[dashboard.DashboardData, dict[str, str]]:
        data = dashboard.load(
            reader,
            now=ctx.now,
            tz=config.tz,
            caps=config.caseload_caps,
            transitions=not isinstance(metrics, dict),
            cases=not isinstance(caseload, dict),
        )
        return data, names_of(reader, refs)

    data, names = await _read(request, ctx, "search-type", work)
    return dashboard.with_apis(data, metrics=metrics, caseload=caseload, names=names)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard_page(request: Request) -> Response:
    """Program numbers as charts, each with its table and a CSV download."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    data = await _dashboard_data(request, ctx)
    charts = dashboard.charts(data, bar=bar_chart, line=line_chart, hbar=hbar_chart)
    tables = {name: dashboard.table(data, name) for name in dashboard.TABLES}
    return _page(
        request,
        "dashboard.html",
        ctx,
        title="Program dashboard",
        data=data,
        charts=charts,
        tables=tables,
    )


@router.get("/dashboard/{name}.csv")
async def dashboard_csv(request: Request, name: str) -> Response:
    """The numbers behind one chart."""
    ctx = await _context(request)
    if isinstance(ctx, HTMLResponse):
        return ctx
    if name not in dashboard.TABLES:
        return _not_found(request, ctx)
    data = await _dashboard_data(request, ctx)
    header, rows = dashboard.table(data, name)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            **PAGE_HEADERS,
            "Content-Disposition": f'attachment; filename="carecoord-{name}.csv"',
        },
    )


def _render_with(env: Environment) -> Callable[..., str]:
    def render(template: str, **values: Any) -> str:
        return env.get_template(template).render(**values)

    return render


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Add the screens to ``app``: pages under ``/app`` (the launch landing ``/app/patient``
    included, ahead of the SMART client's minimal page), static files, security headers and
    embeddable cookies. Raises ``ConfigError`` naming the file and field of a bad
    ``config/web/web.toml``. Idempotent."""
    if getattr(app.state, "web", None) is not None:
        return
    config = load_web_config(settings.config_dir)
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda v: urlencode(v) if isinstance(v, dict) else str(v)
    app.state.web = WebState(
        config=config,
        secret=derive_key(load_secret_key(settings), "web-csrf"),
        clock=lambda: datetime.now(UTC),
        render=_render_with(env),
    )
    app.mount("/app/static", StaticFiles(directory=STATIC), name="web-static")
    before = len(app.router.routes)
    app.include_router(router)
    # Ours first: /app/patient (the SMART launch landing) is ours, not the SMART client's
    # minimal page; everything else of ours is under /app, which nobody else serves.
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added
    own_host = urlsplit(settings.public_url).hostname if settings.public_url else None
    embed = any(is_cross_site(origin, own_host) for origin in config.frame_ancestors)
    app.add_middleware(SecurityHeaders, frame_ancestors=config.frame_ancestors, embed_cookies=embed)
