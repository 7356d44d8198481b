"""authsvc's settings: every AUTHSVC_* variable, read once at start-up and checked.

`Config` is the one place a setting is named, given its default and checked: a bad value
raises ConfigError naming the variable, so a typo stops start-up (under gunicorn the app
fails to load and gunicorn exits) instead of running with a setting nobody asked for.
README.md, "Configuration", has the table of them.

Imported by authsvc.py (the request path), admin.py (the commands) and gunicorn.conf.py;
it imports none of them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value authsvc cannot use; the message names the variable."""


MODES = ("course", "production")

# What each mode makes of the settings left unset (SPEC "Modes"). course: the course's
# behaviour, for learning and for its clients; production: NIST SP 800-63B-4's minimum
# length for a password used alone, the blocklist, a verified email to log in, and a
# cookie name the browser keeps only over HTTPS, for this host (ASVS 3.4.4).
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "course": {
        "password_min_length": 1,
        "password_blocklist": False,
        "require_verified_email": False,
        "cookie_name": "session_id",
    },
    "production": {
        "password_min_length": 15,
        "password_blocklist": True,
        "require_verified_email": True,
        "cookie_name": "__Host-session",
    },
}
# Production may lower the minimum length to this, and no further (NIST SP 800-63B-4:
# 8 for a password used with a second factor, 15 for one used alone).
PRODUCTION_MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 72  # code points: a longer password is over bcrypt's 72 bytes


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of the service, read once at start-up (see README.md, "Configuration").

    The fields that default to None take their mode's default (MODE_DEFAULTS) when the
    Config is made, so `Config(mode="production")` has production's defaults; after
    that they are never None.
    """

    mode: str = "course"
    password_min_length: int | None = None  # in code points
    password_blocklist: bool | None = None  # common passwords and the email refused
    require_verified_email: bool | None = None  # a login of an unproved address: 403
    db: str = "authsvc.db"
    bcrypt_rounds: int = 12
    session_ttl: int = 24 * 60 * 60
    session_idle_ttl: int = 60 * 60  # 0: no idle expiry
    max_sessions: int = 20
    reset_ttl: int = 15 * 60
    body_timeout: int = 10  # seconds to receive a request body
    db_pool_size: int = 16  # PostgreSQL connections per process at most
    cookie_secure: bool = False
    cookie_name: str | None = (
        None  # "session_id" (course), "__Host-session" (production)
    )
    cookie_domain: str = ""  # the cookie's Domain: "" for this host only
    # The login page's absolute origin (https://auth.example.com) for forward auth's
    # redirects; "" sends browsers to the relative /ui/login.
    public_url: str = ""
    # The request limits (README "Configuration" says what each protects, and the
    # anchor its default comes from). Per client: per IPv4 address, or per IPv6 /64 with
    # IPV6_SITE_FACTOR times the limit per /48.
    login_max_failures: int = 10  # per (email, client), per login window
    email_max_failures: int = 100  # per email, from every client together
    client_max_failures: int = 300  # per client, for every email together
    client_max_logins: int = 1000  # per client, every login attempt, failed or not
    login_window: int = 15 * 60
    reset_max_per_email: int = 3  # per (email, client), per hour; smtp delivery only
    email_max_resets: int = 10  # per email, from every client, per hour; smtp only
    client_max_resets: int = 360  # per client, per hour
    client_max_registrations: int = 360  # per client, per hour
    trusted_proxies: int = 0  # proxies in front whose X-Forwarded-For entry is trusted
    allowed_origins: tuple[
        str, ...
    ] = ()  # other origins whose pages may log in and out
    secret_key: str = dataclasses.field(default="", repr=False)  # keys the audit hash
    totp_issuer: str = "authsvc"  # the service's name in authenticator apps
    # Passkeys: the WebAuthn relying party's id (the site's domain) and the origins the
    # ceremonies may come from. "" and () in course mode: "localhost", and any
    # http(s)://localhost origin, whatever its port; production requires both.
    webauthn_rp_id: str = ""
    webauthn_origins: tuple[str, ...] = ()
    reset_delivery: str = "response"  # or "smtp"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_user: str = ""
    smtp_password: str = dataclasses.field(default="", repr=False)  # never printed
    smtp_starttls: bool = False
    metrics: bool = False  # GET /metrics for Prometheus
    # prometheus_client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR), "" for none.
    metrics_dir: str = ""

    def __post_init__(self) -> None:
        """Fill the mode's defaults in; ConfigError for a mode that is none of MODES."""
        if self.mode not in MODES:
            raise ConfigError(
                f"AUTHSVC_MODE must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, refuse_unsafe: bool = True
    ) -> Config:
        """Build a Config from `AUTHSVC_*` variables, defaults for the ones not set (the
        mode's, for those that differ).

        Raises ConfigError naming the variable on a bad value, so a typo stops start-up
        instead of running with a setting nobody asked for; and, in production mode
        (unless `refuse_unsafe` is False: `check` wants the list, not the refusal),
        naming every variable `production_problems` finds.
        """
        mode = environ.get("AUTHSVC_MODE", "course").strip()
        defaults = cls(mode=mode)
        config = cls(
            mode=mode,
            password_min_length=_env_int(
                environ,
                "AUTHSVC_PASSWORD_MIN_LENGTH",
                defaults.password_min_length,
                1,
                MAX_PASSWORD_LENGTH,
            ),
            password_blocklist=_env_bool(
                environ, "AUTHSVC_PASSWORD_BLOCKLIST", defaults.password_blocklist
            ),
            require_verified_email=_env_bool(
                environ,
                "AUTHSVC_REQUIRE_VERIFIED_EMAIL",
                defaults.require_verified_email,
            ),
            db=_env_str(environ, "AUTHSVC_DB", defaults.db),
            bcrypt_rounds=_env_int(
                environ, "AUTHSVC_BCRYPT_ROUNDS", defaults.bcrypt_rounds, 4, 31
            ),
            session_ttl=_env_int(
                environ, "AUTHSVC_SESSION_TTL", defaults.session_ttl, 1, MAX_SESSION_TTL
            ),
            session_idle_ttl=_env_int(
                environ,
                "AUTHSVC_SESSION_IDLE_TTL",
                defaults.session_idle_ttl,
                0,
                MAX_SESSION_TTL,
            ),
            max_sessions=_env_int(
                environ, "AUTHSVC_MAX_SESSIONS", defaults.max_sessions, 1, 1000
            ),
            reset_ttl=_env_int(
                environ, "AUTHSVC_RESET_TTL", defaults.reset_ttl, 1, MAX_RESET_TTL
            ),
            login_max_failures=_env_int(
                environ, "AUTHSVC_LOGIN_MAX_FAILURES", defaults.login_max_failures, 1
            ),
            email_max_failures=_env_int(
                environ, "AUTHSVC_EMAIL_MAX_FAILURES", defaults.email_max_failures, 1
            ),
            client_max_failures=_env_int(
                environ, "AUTHSVC_CLIENT_MAX_FAILURES", defaults.client_max_failures, 1
            ),
            client_max_logins=_env_int(
                environ, "AUTHSVC_CLIENT_MAX_LOGINS", defaults.client_max_logins, 1
            ),
            reset_max_per_email=_env_int(
                environ, "AUTHSVC_RESET_MAX_PER_EMAIL", defaults.reset_max_per_email, 1
            ),
            email_max_resets=_env_int(
                environ, "AUTHSVC_EMAIL_MAX_RESETS", defaults.email_max_resets, 1
            ),
            client_max_resets=_env_int(
                environ, "AUTHSVC_CLIENT_MAX_RESETS", defaults.client_max_resets, 1
            ),
            client_max_registrations=_env_int(
                environ,
                "AUTHSVC_CLIENT_MAX_REGISTRATIONS",
                defaults.client_max_registrations,
                1,
            ),
            trusted_proxies=_env_int(
                environ, "AUTHSVC_TRUSTED_PROXIES", defaults.trusted_proxies, 0, 10
            ),
            allowed_origins=_allowed_origins(environ),
            secret_key=_secret_key(environ),
            totp_issuer=_totp_issuer(environ, defaults.totp_issuer),
            **_webauthn_settings(environ, mode),
            login_window=_env_int(
                environ,
                "AUTHSVC_LOGIN_WINDOW",
                defaults.login_window,
                1,
                MAX_LOGIN_WINDOW,
            ),
            body_timeout=_env_int(
                environ, "AUTHSVC_BODY_TIMEOUT", defaults.body_timeout, 1, 300
            ),
            db_pool_size=_env_int(
                environ, "AUTHSVC_DB_POOL_SIZE", defaults.db_pool_size, 1, 1000
            ),
            **_cookie_settings(environ, defaults),
            public_url=_public_url(environ),
            **_smtp_settings(environ, defaults),
            **_metrics_settings(environ, defaults),
        )
        if refuse_unsafe:
            refuse_unsafe_production(config)
        return config


# Why production refuses each setting it refuses (`production_problems`).
SECRET_KEY_NEEDED = (
    "must be set (at least 32 characters, e.g. openssl rand -hex 32): it keys the "
    "audit trail's email hashes"
)
SECURE_COOKIE_NEEDED = "must be true: the session cookie must travel over HTTPS only"
SMTP_DELIVERY_NEEDED = (
    "must be smtp: response delivery hands a reset token to whoever asks for one, so "
    "anyone who knows an email could take the account"
)
SENDER_NEEDED = "must be set: the sender address of every mail"
RP_ID_NEEDED = (
    "must be set: the site's domain (e.g. example.com) that passkeys are bound to"
)
ORIGINS_NEEDED = (
    "must be set: the https origins (e.g. https://auth.example.com) passkey "
    "ceremonies come from"
)
LONGER_PASSWORDS_NEEDED = (
    f"must be at least {PRODUCTION_MIN_PASSWORD_LENGTH} (NIST SP 800-63B-4)"
)


def production_problems(config: Config) -> list[tuple[str, str]]:
    """What stands between `config` and a production start: (variable, why), in the
    order of the README's table. Empty when production may start with it.

    Start-up connects to nothing: a mail server that does not answer is found at the
    first mail, not here.
    """
    checks = [
        (bool(config.secret_key), "AUTHSVC_SECRET_KEY", SECRET_KEY_NEEDED),
        (config.cookie_secure, "AUTHSVC_COOKIE_SECURE", SECURE_COOKIE_NEEDED),
        (
            config.reset_delivery == "smtp",
            "AUTHSVC_RESET_DELIVERY",
            SMTP_DELIVERY_NEEDED,
        ),
        (bool(config.smtp_from), "AUTHSVC_SMTP_FROM", SENDER_NEEDED),
        (
            (config.password_min_length or 0) >= PRODUCTION_MIN_PASSWORD_LENGTH,
            "AUTHSVC_PASSWORD_MIN_LENGTH",
            LONGER_PASSWORDS_NEEDED,
        ),
        (bool(config.webauthn_rp_id), "AUTHSVC_WEBAUTHN_RP_ID", RP_ID_NEEDED),
        (bool(config.webauthn_origins), "AUTHSVC_WEBAUTHN_ORIGINS", ORIGINS_NEEDED),
    ]
    return [(name, why) for passes, name, why in checks if not passes]


def refuse_unsafe_production(config: Config) -> None:
    """In production mode, ConfigError naming every variable production_problems finds."""
    if config.mode != "production":
        return
    problems = production_problems(config)
    if problems:
        raise ConfigError(
            "AUTHSVC_MODE=production refuses to start: "
            + "; ".join(f"{name} {why}" for name, why in problems)
        )


def check_lines(environ: Mapping[str, str]) -> list[str]:
    """`python authsvc.py check`: each thing that stands between these settings and a
    production start, one line each with the reason (Django's `check --deploy`).

    Course mode is itself one such line; the others are what production would refuse,
    judged with production's defaults for every setting left unset. Empty only when
    the settings are production's and complete. Raises ConfigError for a bad value.
    """
    lines = []
    if environ.get("AUTHSVC_MODE", "course").strip() != "production":
        lines.append(
            "AUTHSVC_MODE: is course (reset tokens in the HTTP answer, any non-empty "
            "password, the course's cookie name): set it to production"
        )
    as_production = Config.from_env(
        {**environ, "AUTHSVC_MODE": "production"}, refuse_unsafe=False
    )
    lines += [f"{name}: {why}" for name, why in production_problems(as_production)]
    return lines


def course_mode_warning(config: Config) -> str | None:
    """The one start-up warning of course mode: what production would refuse or change
    (None in production mode, which starts only without any)."""
    if config.mode != "course":
        return None
    as_production = dataclasses.replace(
        config,
        mode="production",
        **{name: None for name in MODE_DEFAULTS["production"]},
    )
    refused = [name for name, _ in production_problems(as_production)]
    changed = (
        "passwords of at least 15 characters, not common, not the email; a verified "
        "email to log in; the cookie named __Host-session"
    )
    without_key = (
        "; without AUTHSVC_SECRET_KEY the audit trail's email hashes are plain "
        "SHA-256, which anyone can compute for an address they guess, and two-factor "
        "secrets are stored unencrypted, so a copy of the database opens them"
        if not config.secret_key
        else ""
    )
    delivery = (
        "; AUTHSVC_RESET_DELIVERY=response hands a reset token to whoever asks, which "
        "lets anyone who knows an email take the account: use "
        "AUTHSVC_RESET_DELIVERY=smtp in production"
        if config.reset_delivery == "response"
        else ""
    )
    return (
        "AUTHSVC_MODE=course: for learning, not for production. Production would "
        f"refuse {', '.join(refused) or 'nothing of these settings'} and change: "
        f"{changed}{without_key}{delivery}. `python authsvc.py check` lists what to set."
    )


RESET_DELIVERIES = ("response", "smtp")
# Upper bounds for the lifetimes, in seconds. Beyond them a setting is a mistake (a
# session alive for years), and a huge number would overflow the clock arithmetic.
MAX_SESSION_TTL = 366 * 24 * 60 * 60
MAX_RESET_TTL = 24 * 60 * 60
MAX_LOGIN_WINDOW = 24 * 60 * 60


def _smtp_settings(environ: Mapping[str, str], defaults: Config) -> dict[str, Any]:
    """The reset-delivery settings, checked together: smtp needs a sender address,
    and a user name without a password (or the reverse) is a mistake."""
    delivery = environ.get("AUTHSVC_RESET_DELIVERY", defaults.reset_delivery).strip()
    if delivery not in RESET_DELIVERIES:
        raise ConfigError(
            f"AUTHSVC_RESET_DELIVERY must be one of {', '.join(RESET_DELIVERIES)}, got {delivery!r}"
        )
    settings = {
        "reset_delivery": delivery,
        "smtp_host": _env_str(environ, "AUTHSVC_SMTP_HOST", defaults.smtp_host),
        "smtp_port": _env_int(
            environ, "AUTHSVC_SMTP_PORT", defaults.smtp_port, 1, 65535
        ),
        "smtp_from": environ.get("AUTHSVC_SMTP_FROM", defaults.smtp_from).strip(),
        "smtp_user": environ.get("AUTHSVC_SMTP_USER", defaults.smtp_user),
        "smtp_password": environ.get("AUTHSVC_SMTP_PASSWORD", defaults.smtp_password),
        "smtp_starttls": _env_bool(
            environ, "AUTHSVC_SMTP_STARTTLS", defaults.smtp_starttls
        ),
    }
    if delivery == "smtp" and "@" not in settings["smtp_from"]:
        raise ConfigError(
            "AUTHSVC_SMTP_FROM must be an email address when AUTHSVC_RESET_DELIVERY=smtp"
        )
    if bool(settings["smtp_user"]) != bool(settings["smtp_password"]):
        raise ConfigError(
            "AUTHSVC_SMTP_USER and AUTHSVC_SMTP_PASSWORD must be set together"
        )
    return settings


# RFC 6265's cookie-name: an RFC 9110 token.
COOKIE_NAME_SHAPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
# A serialized origin, as browsers send it in `Origin`: scheme, host, optional port.
ORIGIN_SHAPE = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?"
)
MIN_SECRET_KEY_CHARS = 32


def _cookie_settings(environ: Mapping[str, str], defaults: Config) -> dict[str, Any]:
    """The cookie's name and Secure flag, checked together.

    A name starting `__Host-` or `__Secure-` is a promise browsers enforce: they refuse
    such a cookie unless it is Secure (and for `__Host-`, Path=/ and no Domain, which
    authsvc always sends). So such a name without AUTHSVC_COOKIE_SECURE=true would make
    every login a cookie the browser drops: refused at start-up instead.
    """
    domain = environ.get("AUTHSVC_COOKIE_DOMAIN", "").strip().lower()
    if domain and not COOKIE_DOMAIN_SHAPE.fullmatch(domain):
        raise ConfigError(
            f"AUTHSVC_COOKIE_DOMAIN must be a domain name like example.com, got {domain!r}"
        )
    default_name = defaults.cookie_name
    if domain and default_name == "__Host-session":  # __Host- forbids a Domain
        default_name = "__Secure-session"
    name = environ.get("AUTHSVC_COOKIE_NAME", default_name).strip()
    secure = _env_bool(environ, "AUTHSVC_COOKIE_SECURE", defaults.cookie_secure)
    if not COOKIE_NAME_SHAPE.fullmatch(name):
        raise ConfigError(
            f"AUTHSVC_COOKIE_NAME must be 1-64 letters, digits or !#$%&'*+-.^_`|~, got {name!r}"
        )
    # Production's own default name with Secure off is production_problems' to report
    # (AUTHSVC_COOKIE_SECURE), with everything else production refuses.
    chosen = "AUTHSVC_COOKIE_NAME" in environ
    if chosen and name.lower().startswith(("__host-", "__secure-")) and not secure:
        raise ConfigError(
            f"AUTHSVC_COOKIE_NAME={name} needs AUTHSVC_COOKIE_SECURE=true: browsers "
            "keep a __Host- or __Secure- cookie only when it is Secure"
        )
    if domain and name.lower().startswith("__host-"):
        raise ConfigError(
            f"AUTHSVC_COOKIE_DOMAIN cannot go with AUTHSVC_COOKIE_NAME={name}: browsers "
            "refuse a __Host- cookie that has a Domain (use __Secure-session)"
        )
    return {"cookie_name": name, "cookie_secure": secure, "cookie_domain": domain}


# A domain name for the cookie's Domain: labels of letters, digits and hyphens, at
# least two of them (a cookie for a whole top-level domain is refused by browsers).
COOKIE_DOMAIN_SHAPE = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)


def _public_url(environ: Mapping[str, str]) -> str:
    """AUTHSVC_PUBLIC_URL: an http(s) origin (scheme, host, optional port), no path,
    query or fragment; the trailing slash dropped."""
    url = environ.get("AUTHSVC_PUBLIC_URL", "").strip().rstrip("/")
    if url and not ORIGIN_SHAPE.fullmatch(url):
        raise ConfigError(
            "AUTHSVC_PUBLIC_URL must be the login page's origin, like "
            f"https://auth.example.com (no path), got {url!r}"
        )
    return url


def _allowed_origins(environ: Mapping[str, str]) -> tuple[str, ...]:
    """AUTHSVC_ALLOWED_ORIGINS: comma-separated origins like https://app.example.com."""
    raw = environ.get("AUTHSVC_ALLOWED_ORIGINS", "")
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        if not ORIGIN_SHAPE.fullmatch(origin):
            raise ConfigError(
                "AUTHSVC_ALLOWED_ORIGINS must be comma-separated origins such as "
                f"https://app.example.com (scheme, host, optional port), got {origin!r}"
            )
    return origins


# A relying party id is a domain name (WebAuthn: never an IP address), or localhost.
RP_ID_SHAPE = re.compile(
    r"localhost|(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
)
COURSE_RP_ID = "localhost"


def _webauthn_settings(environ: Mapping[str, str], mode: str) -> dict[str, Any]:
    """AUTHSVC_WEBAUTHN_RP_ID and AUTHSVC_WEBAUTHN_ORIGINS, checked together: the id a
    domain name (or localhost); each origin on that domain or one of its subdomains
    (WebAuthn ties a passkey to its RP id, and a browser refuses a ceremony from any
    other host) and https, unless it is on localhost (a browser's one secure context
    over http). Without an RP id, course mode's is localhost; production has none
    (production_problems names it), and its origins are checked for their shape only."""
    rp_id = environ.get("AUTHSVC_WEBAUTHN_RP_ID", "").strip().lower()
    if rp_id and not RP_ID_SHAPE.fullmatch(rp_id):
        raise ConfigError(
            "AUTHSVC_WEBAUTHN_RP_ID must be the site's domain name, like example.com "
            f"(no scheme, port or IP address), got {rp_id!r}"
        )
    raw = environ.get("AUTHSVC_WEBAUTHN_ORIGINS", "")
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    domain = rp_id or (COURSE_RP_ID if mode == "course" else "")
    for origin in origins:
        host = urlsplit(origin).hostname if ORIGIN_SHAPE.fullmatch(origin) else None
        on_domain = host is not None and (
            not domain or host == domain or host.endswith("." + domain)
        )
        secure = origin.startswith("https://") or host == "localhost"
        if not (on_domain and secure):
            raise ConfigError(
                "AUTHSVC_WEBAUTHN_ORIGINS must be comma-separated https origins on "
                f"AUTHSVC_WEBAUTHN_RP_ID's domain ({domain or 'unset'}) or its subdomains, like "
                f"https://auth.{domain if domain != 'localhost' else 'example.com'}, "
                f"got {origin!r}"
            )
    return {"webauthn_rp_id": rp_id, "webauthn_origins": origins}


def _secret_key(environ: Mapping[str, str]) -> str:
    """AUTHSVC_SECRET_KEY, if set: at least 32 characters (e.g. `openssl rand -hex 32`)."""
    key = environ.get("AUTHSVC_SECRET_KEY", "")
    if key and len(key) < MIN_SECRET_KEY_CHARS:
        raise ConfigError(
            f"AUTHSVC_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters "
            "(openssl rand -hex 32 makes one)"
        )
    return key


# What an authenticator app shows as the account's service: printable, one line, short.
TOTP_ISSUER_SHAPE = re.compile(r"[^\x00-\x1f\x7f:]{1,64}")


def _totp_issuer(environ: Mapping[str, str], default: str) -> str:
    """AUTHSVC_TOTP_ISSUER: 1 to 64 printable characters, no colon (the otpauth label
    separates the issuer from the account with one)."""
    issuer = environ.get("AUTHSVC_TOTP_ISSUER", default).strip()
    if not TOTP_ISSUER_SHAPE.fullmatch(issuer):
        raise ConfigError(
            "AUTHSVC_TOTP_ISSUER must be 1 to 64 printable characters without a colon, "
            f"got {issuer!r}"
        )
    return issuer


def _metrics_settings(environ: Mapping[str, str], defaults: Config) -> dict[str, Any]:
    """AUTHSVC_METRICS, and the directory where gunicorn's workers add their figures up.

    prometheus_client reads PROMETHEUS_MULTIPROC_DIR itself, at import; authsvc only
    checks it names a directory it can write, so a typo stops start-up here instead of
    failing in the first request that counts something.
    """
    metrics = _env_bool(environ, "AUTHSVC_METRICS", defaults.metrics)
    metrics_dir = environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if (
        metrics
        and metrics_dir
        and not (
            os.path.isdir(metrics_dir) and os.access(metrics_dir, os.W_OK | os.X_OK)
        )
    ):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR={metrics_dir!r} (with AUTHSVC_METRICS=true) "
            "must be an existing directory authsvc can write"
        )
    return {"metrics": metrics, "metrics_dir": metrics_dir if metrics else ""}


def _env_str(environ: Mapping[str, str], name: str, default: str) -> str:
    """A non-empty string setting."""
    value = environ.get(name, default).strip()
    if not value:
        raise ConfigError(f"{name} must not be empty")
    return value


def _env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    minimum: int,
    maximum: int | None = None,
) -> int:
    """An integer setting within [minimum, maximum]."""
    raw = environ.get(name)
    if raw is None:
        return default
    bounds = (
        f"from {minimum} to {maximum}"
        if maximum is not None
        else f"of at least {minimum}"
    )
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer {bounds}, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be an integer {bounds}, got {raw!r}")
    return value


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off, any case."""
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(
        f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}"
    )
