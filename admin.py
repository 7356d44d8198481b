"""The operator's commands: `python authsvc.py <command>` (no command: the development server).

Off the request path, so they live here rather than in authsvc.py, which imports this
module only when it is run with a command. It imports authsvc's parts (Config,
open_store), never its app (built only on first access). Each command reads the same AUTHSVC_*
configuration as the server where it needs one, prints what it did on stdout, and on
failure exits non-zero with one line on stderr.

    python authsvc.py migrate                          # apply the schema, print its version
    python authsvc.py copy-db authsvc.db postgresql://authsvc@db.internal/authsvc
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import store
from authsvc import Config, ConfigError, open_store
from store import Store


class CommandFailed(Exception):
    """A command could not do its work; the message is the one line the operator sees."""


def cmd_migrate(args: argparse.Namespace) -> str:
    """Apply the schema to AUTHSVC_DB (as every server start does) and say where it is."""
    config = Config.from_env(os.environ)
    target = open_store(config.db, config.db_pool_size)
    return f"schema at version {target.schema_version()} ({target.dialect.name})"


def cmd_copy_db(args: argparse.Namespace) -> str:
    """Copy a SQLite database (users, sessions, pending reset tokens) into PostgreSQL."""
    if store.dialect_for(args.sqlite_path) is not store.SqliteDialect:
        raise CommandFailed(f"{args.sqlite_path!r} is not a SQLite file path")
    if store.dialect_for(args.postgres_url) is not store.PostgresDialect:
        raise CommandFailed(f"{args.postgres_url!r} is not a postgresql:// URL")
    if not os.path.isfile(args.sqlite_path):
        raise CommandFailed(f"no SQLite database at {args.sqlite_path}")
    source, target = Store(args.sqlite_path), Store(args.postgres_url)
    source.initialize()  # the same schema version as the target: what a start would do
    target.initialize()
    if not target.is_empty():
        raise CommandFailed("the PostgreSQL database is not empty: nothing was copied")
    copied = source.copy_into(target)
    counted = target.count_rows()
    if counted != source.count_rows() or counted != copied:
        raise CommandFailed(
            f"counts differ after the copy: {copied} copied, {counted} found"
        )
    return ", ".join(f"{table}: {count}" for table, count in copied.items()) + " copied"


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], str], str]] = {
    "migrate": (cmd_migrate, "apply the schema to AUTHSVC_DB and print its version"),
    "copy-db": (
        cmd_copy_db,
        "copy a SQLite database into an empty PostgreSQL database",
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
            command.add_argument("postgres_url", metavar="POSTGRES_URL")
    return top


def main(argv: Sequence[str]) -> int:
    """Run one command; its exit status (0 done, 1 failed, 2 wrong usage from argparse)."""
    args = parser().parse_args(argv)
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
