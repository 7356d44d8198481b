"""The HTML pages under /ui/: a person's way to use the service, and the course's lesson
shown as it happens.

Each page is a plain form (no script) over the API itself: a POST runs the very handler
the API route runs (`AuthApp.answer`), so a page has the API's checks, limits, audit lines
and metrics, and is never a way around them. The page then turns the API's answer into
HTML: on success a 303 to the next page (post/redirect/get), or, for an answer that shows
something once (a verification code in course mode, a two-factor secret, recovery codes),
that page at once; on a refusal the form again, with the API's message and status.

Every page has a panel, "What just happened": the request the browser sent and the
answer behind the page, the cookie's value always replaced by "…", each line with why it
is there. A page reached by a 303 also shows the answer to the POST before it, which a
short-lived cookie of this module's own (`ui_last`) carries across the redirect.

Templates (templates/) go through Jinja2 with autoescape on: nothing a user typed is
ever written into a page unescaped. This module never imports authsvc.py: the app hands
itself over (`AuthApp` below is the part of it these pages use).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from werkzeug.wrappers import Request, Response

from config import Config

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STYLESHEET = TEMPLATES / "style.css"
SCRIPT = TEMPLATES / "passkeys.js"

# Where the pages may load anything from: their own stylesheet, the QR code as a data:
# image, their one script file (the passkey ceremonies) and its requests to this
# service; no inline script or style, no eval, no frame around them.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'{origins}"
)
# What a page says after an action whose API answer carries no message.
SAID_FOR = {"passkey_rename": "passkey renamed"}
# What the add-a-passkey form says when it is posted without its script.
NEEDS_SCRIPT = (
    "A passkey is made by the browser's WebAuthn API, which needs JavaScript: "
    "allow this page's script, or use another browser."
)
LAST_COOKIE = "ui_last"  # the panel's note of the answer before a 303
# A login waiting for its code keeps its mfa_token here, for the code page alone.
MFA_COOKIE = "ui_mfa_token"
MFA_COOKIE_PATH = "/ui/login/code"
MFA_COOKIE_SECONDS = 5 * 60
LAST_COOKIE_SECONDS = 60
MAX_LAST_COOKIE_CHARS = 3000
# Where `Pages.call` leaves the API's last answer for `Pages.render` (in the environ).
API_ANSWER = "authsvc.pages.api_answer"


class AuthApp(Protocol):
    """What the pages use of authsvc's application (passed in, never imported)."""

    config: Config
    auth: Any

    def answer(
        self, request: Any, endpoint: str, arguments: Mapping[str, Any] | None = None
    ) -> Response: ...

    def body_fields(
        self, request: Any, *names: str, optional: tuple[str, ...] = ()
    ) -> dict[str, str]: ...

    def current_session(self, request: Any) -> tuple[Any, Any]: ...


@dataclass
class Line:
    """One line of the panel: what was sent or answered, and why it is there."""

    text: str
    why: str = ""


@dataclass
class Exchange:
    """The panel: the request behind this page, its answer, and the POST before it."""

    request: list[Line] = field(default_factory=list)
    answer: list[Line] = field(default_factory=list)
    before: list[Line] = field(default_factory=list)
    before_request: str = ""


# -- the lines and their reasons


COOKIE_WHYS = {
    "httponly": "HttpOnly: the page's scripts cannot read it, so an injected script cannot steal the session.",
    "samesite=lax": "SameSite=Lax: other sites' forms and scripts do not get it sent along (no cross-site request forgery); following a link here still does.",
    "path=/": "Path=/: the browser sends it back to every path of the service.",
    "secure": "Secure: only ever sent over HTTPS.",
    "samesite=strict": "SameSite=Strict: sent only with requests from this site's own pages, never after a link from elsewhere.",
    "path=/ui/login/code": "Path=/ui/login/code: only the code page ever gets it back.",
    "max-age=300": "Max-Age=300: the browser drops it after the login's 5 minutes.",
    "max-age=0": "Max-Age=0 and an Expires in 1970: the browser drops the cookie at once; that is how a cookie is deleted.",
}


def redacted_cookie(header: str) -> str:
    """A `Set-Cookie` header with the cookie's value replaced by "…"."""
    name, _, rest = header.partition("=")
    _, semicolon, attributes = rest.partition(";")
    return f"{name}=…{semicolon}{attributes}"


def cookie_lines(headers: list[str]) -> list[Line]:
    """The panel's lines for the `Set-Cookie` headers of an answer (its own note aside)."""
    lines = []
    for header in headers:
        if header.startswith(f"{LAST_COOKIE}="):
            continue
        attributes = [part.strip().lower() for part in header.split(";")[1:]]
        whys = [COOKIE_WHYS[a] for a in attributes if a in COOKIE_WHYS]
        value = header.partition("=")[2].partition(";")[0]
        what = (
            "Set-Cookie: the browser keeps this cookie and sends it with every request here."
            if value
            else "Set-Cookie with an empty value: the answer clears the cookie."
        )
        lines.append(
            Line(f"Set-Cookie: {redacted_cookie(header)}", " ".join([what, *whys]))
        )
    return lines


def status_line(status: int) -> Line:
    """The answer's status line, with why that status."""
    whys = {
        200: "200 OK: here is the page.",
        303: "303 See Other: after a POST, the browser is sent to a page it fetches with GET, so reloading it never sends the form again (post/redirect/get).",
        400: "400: the form's fields are not what the API takes; nothing changed.",
        401: "401: the credentials (password, code) are not right; nothing changed.",
        403: "403: no session, or a refusal the API gives; nothing changed.",
        404: "404: there is no such thing here.",
        429: "429: too many tries; the API's limit, the same for a page as for curl.",
    }
    phrases = {
        200: "OK",
        303: "See Other",
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
    }
    return Line(
        f"HTTP/1.1 {status} {phrases.get(status, '')}".rstrip(), whys.get(status, "")
    )


def request_lines(request: Request, cookie_name: str) -> list[Line]:
    """What the browser sent that matters here: the request line, the cookie (its name
    only), and for a form its origin and encoding."""
    target = request.path + (
        f"?{request.query_string.decode('latin-1')}" if request.query_string else ""
    )
    lines = [Line(f"{request.method} {target} HTTP/1.1")]
    if cookie_name in request.cookies:
        lines.append(
            Line(
                f"Cookie: {cookie_name}=…",
                "The browser sends the session cookie back with every request here: that is how the service knows it is you.",
            )
        )
    if MFA_COOKIE in request.cookies:
        lines.append(
            Line(
                f"Cookie: {MFA_COOKIE}=…",
                "The login waiting for its code: the browser sends this cookie to the code page alone.",
            )
        )
    if request.method == "POST":
        if "Origin" in request.headers:
            lines.append(
                Line(
                    f"Origin: {request.headers['Origin']}",
                    "Which site's page sent the form: the service takes forms only from its own pages.",
                )
            )
        lines.append(
            Line(
                f"Content-Type: {request.mimetype}",
                "An HTML form's fields, URL-encoded: what curl -d sends too.",
            )
        )
    return lines


PAGE_ANSWER_LINES = [
    Line("Content-Type: text/html; charset=utf-8"),
    Line(
        "Cache-Control: no-store",
        "no-store: neither the browser nor a proxy keeps a copy of a page that shows your account.",
    ),
    Line(
        "Vary: Cookie",
        "Vary: Cookie: the page depends on the cookie, so no cache hands it to someone else.",
    ),
    Line(
        "Content-Security-Policy: default-src 'none'; style-src 'self'; …",
        "Only this service's own stylesheet and images load, no script runs, and no other site may frame the page.",
    ),
    Line(
        "Referrer-Policy: no-referrer",
        "no-referrer: a link you follow from here does not tell the next site this address.",
    ),
]


# -- the note carried across a 303


def note_of(response: Response, request: Request, message: str) -> str:
    """What `ui_last` keeps of a redirecting answer: its request line, status,
    `Location`, cookies (values redacted) and the page's message, base64 of JSON."""
    note = {
        "request": f"{request.method} {request.path}",
        "status": response.status_code,
        "location": response.headers.get("Location", ""),
        "cookies": [
            redacted_cookie(h)
            for h in response.headers.getlist("Set-Cookie")
            if not h.startswith(f"{LAST_COOKIE}=")
        ],
        "message": message,
    }
    return base64.urlsafe_b64encode(json.dumps(note).encode()).decode("ascii")


def read_note(request: Request) -> dict[str, Any]:
    """The `ui_last` note, or {} when there is none or it does not parse (it came from
    the browser: anything is possible, and it is only ever shown escaped)."""
    raw = request.cookies.get(LAST_COOKIE, "")
    if not raw or len(raw) > MAX_LAST_COOKIE_CHARS:
        return {}
    try:
        note = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        return {}
    return note if isinstance(note, dict) else {}


def before_lines(note: Mapping[str, Any]) -> list[Line]:
    """The panel's lines for the noted answer: status, Location, its cookies."""
    status = note.get("status")
    if not isinstance(status, int):
        return []
    lines = [status_line(status)]
    location = note.get("location")
    if isinstance(location, str) and location:
        lines.append(
            Line(
                f"Location: {location}",
                "Location: where the browser goes next, with a GET.",
            )
        )
    cookies = note.get("cookies")
    if isinstance(cookies, list):
        lines += cookie_lines([c for c in cookies if isinstance(c, str)])
    return lines


# -- where a login may send the browser on


def safe_next(rd: str, request: Request, allowed_origins: tuple[str, ...]) -> str:
    """`rd` if it is a path of this service or a URL of its own origin or an allowed one;
    otherwise /ui/account. Never `//host` or `\\host`, which browsers read as another site."""
    if rd.startswith("/") and not rd.startswith(("//", "/\\")) and "\\" not in rd:
        return rd
    try:
        parts = urlsplit(rd)
    except ValueError:  # "Invalid IPv6 URL": a "[" it cannot close
        return "/ui/account"
    if parts.scheme in ("http", "https") and parts.netloc:
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin == request.host_url.rstrip("/") or origin in allowed_origins:
            return rd
    return "/ui/account"


def with_rd(path: str, rd: str) -> str:
    """`path`, carrying `?rd=` on when there is one."""
    return path + (f"?rd={quote(rd)}" if rd else "")


# -- the pages


class Pages:
    """The /ui/ pages of one application."""

    def __init__(self, app: AuthApp, config: Config) -> None:
        """Serve pages for `app`; templates from templates/, autoescaped."""
        self.app = app
        self.config = config
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        origins = "".join(f" {origin}" for origin in config.allowed_origins)
        self.csp = CONTENT_SECURITY_POLICY.format(origins=origins)
        self.stylesheet = STYLESHEET.read_bytes()
        self.script = SCRIPT.read_bytes()
        self.handlers: dict[str, Callable[..., Response]] = {
            "ui_style": self.style,
            "ui_script": self.passkey_script,
            "ui_signup_form": self.signup,
            "ui_signup": self.signup,
            "ui_login_form": self.login,
            "ui_login": self.login,
            "ui_login_code_form": self.login_code,
            "ui_login_code": self.login_code,
            "ui_logout": self.logout,
            "ui_reset_form": self.reset,
            "ui_reset": self.reset,
            "ui_reset_confirm_form": self.reset_confirm,
            "ui_reset_confirm": self.reset_confirm,
            "ui_verify_form": self.verify,
            "ui_verify": self.verify,
            "ui_account": self.account,
            "ui_account_action": self.account_action,
        }

    def show(
        self, request: Request, endpoint: str, arguments: Mapping[str, Any]
    ) -> Response:
        """The answer of the page `endpoint`."""
        return self.handlers[endpoint](request, **arguments)

    # -- plumbing

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        **values: Any,
    ) -> Response:
        """A page: the template with `values`, the panel, the page's security headers."""
        note = read_note(request)
        exchange = Exchange(
            request=request_lines(request, self.config.cookie_name),
            answer=[status_line(status), *PAGE_ANSWER_LINES],
            before=before_lines(note),
            before_request=str(note.get("request", "")),
        )
        message = note.get("message") if isinstance(note.get("message"), str) else ""
        values.setdefault("notice", message)
        # Where a passkey login on this page sends the browser on (login.html).
        values.setdefault("next", self.next_page(request))
        values.setdefault("error", "")
        values.setdefault("errors", {})
        html = self.templates.get_template(template).render(
            exchange=exchange,
            logged_in=self.config.cookie_name in request.cookies,
            **values,
        )
        response = Response(html, status=status, mimetype="text/html")
        self.secure(response)
        api = request.environ.get(API_ANSWER)
        if api is not None and api.status_code == status:
            # A 401 names how to authenticate (RFC 9110), a 429 when to try again.
            for name in ("WWW-Authenticate", "Retry-After"):
                if name in api.headers:
                    response.headers[name] = api.headers[name]
        if LAST_COOKIE in request.cookies:  # shown once: drop it
            response.delete_cookie(
                LAST_COOKIE,
                path="/ui",
                httponly=True,
                samesite="Lax",
                secure=self.config.cookie_secure,
            )
        return response

    def refuse(
        self,
        request: Request,
        template: str,
        answer: Response,
        body: Mapping[str, Any],
        **values: Any,
    ) -> Response:
        """The form again, with the API's refusal: its status and its message."""
        return self.render(
            request,
            template,
            answer.status_code,
            error=str(body.get("message", "")),
            **values,
        )

    def secure(self, response: Response) -> None:
        """The headers every page carries: no cache keeps it (it shows the account, or
        answers a form), only its own files load, nobody frames it, no link leaks it."""
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "Cookie"
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"

    def redirect(
        self,
        request: Request,
        location: str,
        api: Response | None = None,
        message: str = "",
        mfa_token: str = "",
    ) -> Response:
        """303 to `location`, carrying over the cookies the API's answer set or cleared
        (and, for the code page, the login's `mfa_token`), and a note of it all for the
        next page's panel."""
        response = Response(status=303)
        response.headers["Location"] = location
        for header in api.headers.getlist("Set-Cookie") if api is not None else []:
            response.headers.add("Set-Cookie", header)
        if mfa_token:
            response.set_cookie(
                MFA_COOKIE,
                mfa_token,
                max_age=MFA_COOKIE_SECONDS,
                path=MFA_COOKIE_PATH,
                httponly=True,
                samesite="Strict",
                secure=self.config.cookie_secure,
            )
        response.set_cookie(
            LAST_COOKIE,
            note_of(response, request, message),
            max_age=LAST_COOKIE_SECONDS,
            path="/ui",
            httponly=True,
            samesite="Lax",
            secure=self.config.cookie_secure,
        )
        self.secure(response)
        return response

    def call(
        self, request: Request, endpoint: str, **arguments: Any
    ) -> tuple[Response, dict[str, Any]]:
        """Run the API's handler of `endpoint` on this request: its answer and JSON body."""
        answer = self.app.answer(request, endpoint, arguments)
        request.environ[API_ANSWER] = answer
        try:
            body = json.loads(answer.get_data())
        except ValueError:
            body = {}
        return answer, body if isinstance(body, dict) else {}

    def field(self, request: Request, name: str) -> str:
        """A field of the form as typed (for showing it again, escaped), or ""."""
        try:
            return self.app.body_fields(request, optional=(name,)).get(name, "")
        except Exception:  # noqa: BLE001 - a body the API refused: nothing to show again
            return ""

    def next_page(self, request: Request) -> str:
        """Where a login or sign-up sends the browser on: `?rd=`, if it is allowed."""
        return safe_next(
            request.args.get("rd", ""), request, self.config.allowed_origins
        )

    # -- the pages

    def style(self, request: Request) -> Response:
        """GET /ui/style.css: the pages' one stylesheet."""
        response = Response(self.stylesheet, mimetype="text/css")
        response.headers["Cache-Control"] = "max-age=3600"
        return response

    def signup(self, request: Request) -> Response:
        """/ui/signup: register, then log in (or, where a verified email is needed,
        go to the verification page)."""
        rd = request.args.get("rd", "")
        if request.method == "GET":
            return self.render(request, "signup.html", email="", rd=rd)
        registered, body = self.call(request, "register")
        if registered.status_code != 200:
            return self.refuse(
                request,
                "signup.html",
                registered,
                body,
                email=self.field(request, "email"),
                rd=rd,
            )
        login, body = self.call(request, "login")
        if login.status_code == 403 and body.get("message") == "email not verified":
            email = self.field(request, "email")
            return self.redirect(
                request,
                f"/ui/verify?email={quote(email)}",
                login,
                "Account created. Prove the address with a code, then log in.",
            )
        return self.redirect(
            request,
            self.next_page(request),
            login,
            "Account created; you are logged in.",
        )

    def passkey_script(self, request: Request) -> Response:
        """GET /ui/passkeys.js: the pages' one script, the passkey ceremonies."""
        response = Response(self.script, mimetype="text/javascript")
        response.headers["Cache-Control"] = "max-age=3600"
        return response

    def login(self, request: Request) -> Response:
        """/ui/login: email and password; on to the code page when two-factor asks one."""
        rd = request.args.get("rd", "")
        if request.method == "GET":
            return self.render(request, "login.html", email="", rd=rd)
        answer, body = self.call(request, "login")
        if answer.status_code == 200:
            return self.redirect(
                request, self.next_page(request), answer, "You are logged in."
            )
        if "mfa_token" in body:
            # The token goes in a cookie only the code page gets: never into a page,
            # a URL or a form field.
            return self.redirect(
                request,
                with_rd(MFA_COOKIE_PATH, rd),
                message="The password was right; now the two-factor code.",
                mfa_token=body["mfa_token"],
            )
        return self.refuse(
            request,
            "login.html",
            answer,
            body,
            email=self.field(request, "email"),
            rd=rd,
        )

    def login_code(self, request: Request) -> Response:
        """/ui/login/code: the two-factor code (or a recovery code) after the password."""
        rd = request.args.get("rd", "")
        token = request.cookies.get(MFA_COOKIE, "")
        if not token:
            return self.redirect(
                request,
                with_rd("/ui/login", rd),
                message="Log in with your password first.",
            )
        if request.method == "GET":
            return self.render(request, "login_code.html", rd=rd)
        code = self.field(request, "code")
        answer, body = (
            self.call(
                request,
                "login_with_mfa_token",
                fields={"mfa_token": token, "code": code},
            )
            if code
            else (None, {"message": "code is required"})
        )
        if answer is not None and answer.status_code == 200:
            done = self.redirect(
                request, self.next_page(request), answer, "You are logged in."
            )
            self.forget_mfa_token(done)
            return done
        status = answer.status_code if answer is not None else 400
        message = body.get("message", "")
        if message in ("wrong two-factor code", "code is required"):
            return self.render(request, "login_code.html", status, rd=rd, error=message)
        refused = self.render(
            request, "login.html", status, email="", rd=rd, error=message
        )
        self.forget_mfa_token(refused)
        return refused

    def forget_mfa_token(self, response: Response) -> None:
        """Clear the code page's cookie: the login ended, one way or the other."""
        response.delete_cookie(
            MFA_COOKIE,
            path=MFA_COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=self.config.cookie_secure,
        )

    def logout(self, request: Request) -> Response:
        """POST /ui/logout: end this session (DELETE /sessions) and go to the login page."""
        answer, body = self.call(request, "logout")
        if body.get("message") == "cross-site request refused":
            return self.refuse(request, "login.html", answer, body, email="", rd="")
        # Logged out, or no session to end: either way, on to the login page.
        return self.redirect(request, "/ui/login", answer, "You are logged out.")

    def reset(self, request: Request) -> Response:
        """/ui/reset: ask for a reset token. Course mode shows it here (as the API's
        answer holds it); smtp delivery mails it."""
        if request.method == "GET":
            return self.render(request, "reset.html", email="")
        answer, body = self.call(request, "reset_token")
        email = self.field(request, "email")
        if answer.status_code != 200:
            return self.refuse(
                request,
                "reset.html",
                answer,
                body,
                email=email,
            )
        return self.render(
            request,
            "reset_confirm.html",
            email=body.get("email", email),
            reset_token=body.get("reset_token", ""),
            notice=body.get("message", "")
            or "Course mode: the token is in the API's answer, so it is shown here. In production it goes by mail.",
        )

    def reset_confirm(self, request: Request) -> Response:
        """/ui/reset/confirm: the token and a new password (PUT /reset_password)."""
        if request.method == "GET":
            return self.render(
                request,
                "reset_confirm.html",
                email=request.args.get("email", ""),
                reset_token="",
            )
        answer, body = self.call(request, "update_password")
        if answer.status_code == 200:
            return self.redirect(
                request,
                "/ui/login",
                answer,
                "Password updated: log in with the new one.",
            )
        return self.refuse(
            request,
            "reset_confirm.html",
            answer,
            body,
            email=self.field(request, "email"),
            reset_token=self.field(request, "reset_token"),
        )

    def verify(self, request: Request) -> Response:
        """/ui/verify: prove an address without a session (the API's cookieless
        verification): send a code, then type it."""
        if request.method == "GET":
            return self.render(
                request,
                "verify.html",
                email=request.args.get("email", ""),
                code_sent="",
            )
        email = self.field(request, "email")
        confirming = bool(self.field(request, "code"))
        endpoint = "verify_email" if confirming else "request_verification"
        answer, body = self.call(request, endpoint)
        if answer.status_code != 200:
            return self.refuse(
                request, "verify.html", answer, body, email=email, code_sent=""
            )
        if confirming:
            return self.redirect(
                request, "/ui/login", answer, "Email verified: log in."
            )
        return self.render(
            request,
            "verify.html",
            email=email,
            code_sent=body.get("verification_code", ""),
            notice=body["message"],
        )

    # -- the account

    def account(
        self,
        request: Request,
        status: int = 200,
        shown: Mapping[str, Any] | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> Response:
        """/ui/account: the account, its sessions, and a form for each change."""
        answer, account = self.call(request, "account")
        if answer.status_code != 200:
            return self.redirect(
                request, "/ui/login?rd=/ui/account", message="Log in first."
            )
        _, listing = self.call(request, "list_sessions")
        _, passkeys = self.call(request, "list_passkeys")
        return self.render(
            request,
            "account.html",
            status,
            account=account,
            sessions=listing.get("sessions", []),
            passkeys=passkeys.get("passkeys", []),
            shown=dict(shown or {}),
            errors=dict(errors or {}),
        )

    # (the form's action, the API endpoint it runs, and what a success does)
    ACTIONS: ClassVar[dict[str, tuple[str, str]]] = {
        "verification": ("request_verification", "show"),
        "verify": ("verify_email", "redirect"),
        "password": ("change_password", "redirect"),
        "email": ("change_email", "show"),
        "two_factor": ("begin_two_factor", "show"),
        "two_factor_confirm": ("enable_two_factor", "show"),
        "two_factor_off": ("disable_two_factor", "redirect"),
        "recovery_codes": ("renew_recovery_codes", "show"),
        "passkey_rename": ("rename_passkey", "redirect"),
        "passkey_remove": ("remove_passkey", "redirect"),
        "end_session": ("end_session", "redirect"),
        "end_others": ("end_other_sessions", "redirect"),
        "delete": ("delete_account", "signup"),
    }

    def account_action(self, request: Request, action: str) -> Response:
        """POST /ui/account/<action>: one change, through its API route."""
        if action == "passkey_add":  # the form's script did not run
            return self.account(request, 400, errors={action: NEEDS_SCRIPT})
        if action not in self.ACTIONS:
            return self.render(request, "message.html", 404, error="no such page")
        endpoint, success = self.ACTIONS[action]
        arguments = {}
        if action == "end_session":
            arguments["public_id"] = self.field(request, "public_id")
        if action.startswith("passkey_"):
            arguments["public_id"] = self.field(request, "passkey_id")
        answer, body = self.call(request, endpoint, **arguments)
        # The API's message; a rename answers the passkey itself, which has none.
        message = str(body.get("message") or SAID_FOR.get(action, ""))
        if answer.status_code != 200:
            if message == "no valid session":
                return self.redirect(
                    request, "/ui/login?rd=/ui/account", answer, "Log in first."
                )
            return self.account(request, answer.status_code, errors={action: message})
        if success == "redirect":
            return self.redirect(request, "/ui/account", answer, message)
        if success == "signup":
            return self.redirect(
                request, "/ui/signup", answer, "Your account is deleted."
            )
        shown = dict(body)
        if "qr_svg" in shown:  # an image, not markup: the page never holds raw SVG
            shown["qr_src"] = (
                "data:image/svg+xml;base64,"
                + base64.b64encode(shown.pop("qr_svg").encode()).decode()
            )
        return self.account(request, shown={"action": action, **shown})
