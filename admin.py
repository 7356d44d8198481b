"""The operator's commands: `python authsvc.py <command>` (no command: the development server).

Off the request path, so they live here rather than in authsvc.py, which imports this
module only when it is run with a command. It imports authsvc's parts (Config,
open_store), never its app (built only on first access). Each command reads the same AUTHSVC_*
configuration as the server where it needs one, prints what it did on stdout, and on
failure exits non-zero with one line on stderr.

    python authsvc.py migrate                          # apply the schema, print its version
    python authsvc.py check                            # what production would refuse
    python authsvc.py purge                            # delete what has ended (cron)
    python authsvc.py create-user bob@example.com      # password from a prompt or stdin
    python authsvc.py set-password bob@example.com     # ends the user's sessions
    python authsvc.py end-sessions bob@example.com
    python authsvc.py delete-user bob@example.com
    python authsvc.py two-factor-off bob@example.com   # a lost phone, no recovery code
    python authsvc.py two-factor-off --passkeys bob@example.com   # and its passkeys
    python authsvc.py users --list
    AUTHSVC_DB=postgresql://... python authsvc.py copy-db authsvc.db

Passwords are read with getpass from a terminal, or as one line from stdin when it is a
pipe: never from the command line, where `ps` and shell history would keep them; for the
same reason copy-db takes the PostgreSQL URL from AUTHSVC_DB, and refuses one with a
password on the command line (libpq's PGPASSWORD or ~/.pgpass can carry it). Every
command that changes something writes the audit line the HTTP routes write, with
`client=cli`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from werkzeug.exceptions import BadRequest

import store
from authsvc import (
    Auth,
    NoMetrics,
    UnknownEmail,
    audit,
    configure_logging,
    lookup_email,
    new_email,
    new_password,
    open_store,
)
from config import Config, ConfigError, check_lines
from passwords import WeakPassword
from store import DuplicateEmail, Store, User


class CommandFailed(Exception):
    """A command could not do its work; the message is the one line the operator sees."""


def cmd_migrate(args: argparse.Namespace) -> str:
    """Apply the schema to AUTHSVC_DB (as every server start does) and say where it is."""
    config = Config.from_env(os.environ)
    target = open_store(config.db, config.db_pool_size)
    return f"schema at version {target.schema_version()} ({target.dialect.name})"


def cmd_copy_db(args: argparse.Namespace) -> str:
    """Copy a SQLite database (users, sessions, pending reset tokens) into PostgreSQL:
    the one in AUTHSVC_DB, or POSTGRES_URL when it holds no password."""
    target_url = args.postgres_url or os.environ.get("AUTHSVC_DB", "")
    if args.postgres_url and urlsplit(args.postgres_url).password is not None:
        raise CommandFailed(
            "a password on the command line is kept by ps and the shell's history: "
            "put the URL in AUTHSVC_DB, or the password in PGPASSWORD or ~/.pgpass"
        )
    if store.dialect_for(args.sqlite_path) is not store.SqliteDialect:
        raise CommandFailed(f"{args.sqlite_path!r} is not a SQLite file path")
    if store.dialect_for(target_url) is not store.PostgresDialect:
        raise CommandFailed(
            "AUTHSVC_DB (or POSTGRES_URL) must be a postgresql:// URL to copy into"
        )
    if not os.path.isfile(args.sqlite_path):
        raise CommandFailed(f"no SQLite database at {args.sqlite_path}")
    source, target = Store(args.sqlite_path), Store(target_url)
    source.initialize()  # the same schema version as the target: what a start would do
    target.initialize()
    if not target.is_empty():
        raise CommandFailed("the PostgreSQL database is not empty: nothing was copied")
    try:
        copied = source.copy_into(target)
    except store.RowNotCopied as refused:
        raise CommandFailed(f"{refused}; nothing was copied") from None
    counted = target.count_rows()
    if counted != source.count_rows() or counted != copied:
        raise CommandFailed(
            f"counts differ after the copy: {copied} copied, {counted} found"
        )
    return ", ".join(f"{table}: {count}" for table, count in copied.items()) + " copied"


def auth_from_env() -> Auth:
    """The same Auth the server builds from AUTHSVC_*."""
    # NoMetrics: a command's bcrypt and store calls are not the server's traffic.
    return Auth(Config.from_env(os.environ), metrics=NoMetrics())


def secret_key() -> str:
    """AUTHSVC_SECRET_KEY, so a command's audit line hashes an email as the server does."""
    return Config.from_env(os.environ).secret_key


def read_password() -> str:
    """A password from a prompt (asked twice) on a terminal, else one line of stdin."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CommandFailed("the two passwords differ")
        return password
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def required(name: str, value: str) -> str:
    """`value`, or the 400 POST /users gives a blank field, as a CommandFailed."""
    if not value.strip():
        raise CommandFailed(f"{name} is required")
    return value


def checked(check: Callable[..., str], *args: str) -> str:
    """`check(*args)` from authsvc's request validation, its 400 as a CommandFailed."""
    try:
        return check(*args)
    except BadRequest as refused:
        raise CommandFailed(str(refused.description)) from None


def cmd_purge(args: argparse.Namespace) -> str:
    """Delete ended sessions, expired reset tokens and ended throttle windows."""
    counts = auth_from_env().purge()
    return ", ".join(f"{kind}: {count}" for kind, count in counts.items()) + " deleted"


def cmd_create_user(args: argparse.Namespace) -> str:
    """Register a user as POST /users does, with the same checks."""
    email = checked(new_email, args.email)
    password = checked(new_password, "password", required("password", read_password()))
    try:
        user = auth_from_env().register_user(email, password)
    except DuplicateEmail:
        audit("register", "duplicate", "cli", email=email, key=secret_key())
        raise CommandFailed("email already registered") from None
    except WeakPassword as weak:
        raise CommandFailed(str(weak)) from None
    audit("register", "ok", "cli", user=user)
    return f"user {user.id} created: {email}"


def cmd_set_password(args: argparse.Namespace) -> str:
    """Set a user's password (read from a prompt or stdin) and end their sessions."""
    email = checked(lookup_email, args.email)
    password = checked(new_password, "password", required("password", read_password()))
    try:
        user, ended = auth_from_env().set_password(email, password)
    except UnknownEmail:
        raise CommandFailed(f"no user has the email {email}") from None
    except WeakPassword as weak:
        raise CommandFailed(str(weak)) from None
    audit("password_update", "ok", "cli", user=user)
    return f"password set for user {user.id}; {ended} session(s) ended"


def user_named(auth: Auth, email_argument: str) -> User:
    """The user the command line names; CommandFailed saying so when there is none."""
    email = checked(lookup_email, email_argument)
    try:
        return auth.find_user(email)
    except UnknownEmail:
        raise CommandFailed(f"no user has the email {email}") from None


def cmd_end_sessions(args: argparse.Namespace) -> str:
    """End every session of a user (a stolen device, say)."""
    auth = auth_from_env()
    user = user_named(auth, args.email)
    ended = auth.end_all_sessions(user.id)
    audit("end_sessions", "ok", "cli", user=user)
    return f"{ended} session(s) ended for user {user.id}"


def cmd_check(args: argparse.Namespace) -> str:
    """What stands between the AUTHSVC_* settings and a production start, one line each
    with the reason (course mode itself is one); the operator's checklist."""
    lines = check_lines(os.environ)
    for line in lines:
        print(line)
    if lines:
        raise CommandFailed(
            f"{len(lines)} thing(s) stand between these settings and a production start"
        )
    return "these settings start in production mode"


def cmd_delete_user(args: argparse.Namespace) -> str:
    """Delete a user and everything of theirs, as DELETE /account does (no password:
    the operator's own call, audited)."""
    auth = auth_from_env()
    user = user_named(auth, args.email)
    auth.delete_user(user)
    audit("account_delete", "ok", "cli", user=user)
    return f"user {user.id} deleted"


def cmd_two_factor_off(args: argparse.Namespace) -> str:
    """Turn a user's two-factor off without a code: the way back for someone who lost
    the device and the recovery codes, once the operator has checked who is asking
    (SPEC: the only way around the code). With --passkeys, their passkeys go too (a
    lost phone can hold both). Audited; the user gets a notice mail."""
    auth = auth_from_env()
    user = user_named(auth, args.email)
    was_on = auth.two_factor_off(user)
    audit("two_factor_off", "ok" if was_on else "was_off", "cli", user=user)
    said = (
        f"two-factor turned off for user {user.id}"
        if was_on
        else f"two-factor was not on for user {user.id}"
    )
    if not args.passkeys:
        return said + (
            "; the password alone logs in" if was_on else ": nothing changed"
        )
    removed = auth.passkeys_off(user)
    audit("passkeys_off", "ok" if removed else "none", "cli", user=user)
    return f"{said}; {removed} passkey(s) removed; the password alone logs in"


def cmd_users(args: argparse.Namespace) -> str:
    """How many users; with --list each email and its live sessions, streamed."""
    auth = auth_from_env()
    if args.list:
        for email, live in auth.users_with_live_sessions():
            print(f"{email}\t{live}")
    return f"{auth.count_users()} user(s)"


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], str], str]] = {
    "migrate": (cmd_migrate, "apply the schema to AUTHSVC_DB and print its version"),
    "check": (
        cmd_check,
        "list what stands between the settings and a production start (exit 1 if any)",
    ),
    "purge": (
        cmd_purge,
        "delete ended sessions, expired reset tokens, ended throttle windows",
    ),
    "create-user": (
        cmd_create_user,
        "register a user (password from a prompt or stdin)",
    ),
    "set-password": (
        cmd_set_password,
        "set a user's password (prompt or stdin) and end their sessions",
    ),
    "end-sessions": (cmd_end_sessions, "end every session of a user"),
    "delete-user": (
        cmd_delete_user,
        "delete a user, their sessions, tokens and codes (the email can sign up again)",
    ),
    "two-factor-off": (
        cmd_two_factor_off,
        (
            "turn a user's two-factor off without a code (a lost device), audited;"
            " --passkeys: remove their passkeys too"
        ),
    ),
    "users": (cmd_users, "count the users; --list: each email and its live sessions"),
    "copy-db": (
        cmd_copy_db,
        "copy a SQLite database into the empty PostgreSQL database of AUTHSVC_DB",
    ),
}


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per entry of COMMANDS."""
    top = argparse.ArgumentParser(
        prog="python authsvc.py",
        description="authsvc's operator commands (without one: the development server).",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        if name == "copy-db":
            command.add_argument("sqlite_path", metavar="SQLITE_PATH")
            command.add_argument(
                "postgres_url",
                metavar="POSTGRES_URL",
                nargs="?",
                default="",
                help="without a password; AUTHSVC_DB when left out",
            )
        if name in (
            "create-user",
            "set-password",
            "end-sessions",
            "delete-user",
            "two-factor-off",
        ):
            command.add_argument("email", metavar="EMAIL")
        if name == "two-factor-off":
            command.add_argument(
                "--passkeys",
                action="store_true",
                help="also remove every passkey of the user",
            )
        if name == "users":
            command.add_argument(
                "--list",
                action="store_true",
                help="print each email and its live sessions",
            )
    return top


def main(argv: Sequence[str]) -> int:
    """Run one command; its exit status (0 done, 1 failed, 2 wrong usage from argparse)."""
    args = parser().parse_args(argv)
    configure_logging()  # the audit lines, on stderr as the server writes them
    run, _ = COMMANDS[args.command]
    try:
        print(run(args))
    except (
        CommandFailed,
        ConfigError,
        store.DatabaseUnusable,
        store.SchemaTooNew,
    ) as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return 1
    except (store.DatabaseBusy, store.DatabaseUnavailable) as error:
        print(f"{args.command}: {error}; try again", file=sys.stderr)
        return 1
    finally:
        store.close_all_pools()
    return 0
