"""`feedbackloop` command line.

`serve`, `db` and `keys` work on the store directly (they bootstrap a deployment: there is no
key to talk to a server with before the first one exists). Every other command talks to a
running server over gRPC, so it works the same against a laptop or a cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from feedbackloop import auth, names
from feedbackloop.config import Settings

if TYPE_CHECKING:
    from feedbackloop.store.db import Database

Handler = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("role", "host", "port", "data_dir", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from feedbackloop.server import StartupError, serve

    try:
        serve(_settings(args))
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from feedbackloop.store.db import Database, safe_url

    settings = _settings(args)
    db = Database(settings.effective_database_url)
    try:
        before = db.upgrade(args.revision)  # several at once take turns (Database.upgrade)
        after = db.current_revision()
    except OperationalError as error:
        print(
            f"error: cannot reach the database at {safe_url(db.url)}: {error.orig or error}", file=sys.stderr
        )
        return 1
    finally:
        db.dispose()
    if before == after:
        print(f"database at revision {after}: nothing to do")
    else:
        print(f"database upgraded from revision {before or 'none (empty)'} to {after}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from feedbackloop.store.db import Database

    db = Database(_settings(args).effective_database_url)
    print(f"current: {db.current_revision()}  head: {db.head_revision()}")
    return 0


@contextmanager
def _quiet_migrations(verbose: bool) -> Iterator[None]:
    """Alembic logs its plugins (on import) and every migration step at INFO."""
    logger = logging.getLogger("alembic")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quietly(handler: Handler) -> Handler:
    """`handler` without Alembic's INFO lines (`-v` keeps them): `keys` output is a key or a
    table, and the silent upgrade of an empty store is not news."""

    def run(args: argparse.Namespace) -> int:
        with _quiet_migrations(getattr(args, "verbose", False)):
            return handler(args)

    return run


def _open_migrated_db(args: argparse.Namespace) -> Database:
    from feedbackloop.store.db import Database

    db = Database(_settings(args).effective_database_url)
    db.upgrade()  # a no-op at head; a fresh store gets its schema
    return db


def _usage_error(option: str, error: ValueError) -> int:
    print(f"error: {option}: {error}", file=sys.stderr)
    return 2


def _key_arguments(args: argparse.Namespace) -> tuple[frozenset[auth.Scope], str] | int:
    """A key's scopes and reviewer from --project, --scope and --reviewer, or the usage error's exit code."""
    try:
        names.check_project_id(args.project)
    except ValueError as error:
        return _usage_error("--project", error)
    try:
        scopes = auth.parse_scopes(args.scope)
    except ValueError as error:
        return _usage_error("--scope", error)
    if args.reviewer is not None:
        try:
            names.check_reviewer(args.reviewer)
        except ValueError as error:
            return _usage_error("--reviewer", error)
    return scopes, args.reviewer or ""


def cmd_keys_create(args: argparse.Namespace) -> int:
    from feedbackloop.store import keys

    # Every argument is checked before the store is opened, so a refused command changes nothing.
    checked = _key_arguments(args)
    if isinstance(checked, int):
        return checked
    scopes, reviewer = checked
    key = keys.create_key(_open_migrated_db(args), args.project, scopes, args.description, reviewer)
    print(key)
    reviews_as = f", reviews as {reviewer}" if reviewer else ""
    print(
        f"# project {args.project}, scopes {' '.join(sorted(scopes))}{reviews_as}. This key is shown "
        "once; store it now. Send it as 'authorization: Bearer <key>'.",
        file=sys.stderr,
    )
    return 0


def cmd_keys_ensure(args: argparse.Namespace) -> int:
    from feedbackloop.store import keys

    checked = _key_arguments(args)
    if isinstance(checked, int):
        return checked
    scopes, reviewer = checked
    key = os.environ.get(args.from_env, "").strip()
    if not key:
        print(
            f"error: --from-env: the environment variable {args.from_env} is not set or empty",
            file=sys.stderr,
        )
        return 2
    try:
        auth.key_id_of(key)
    except ValueError as error:
        return _usage_error(f"--from-env {args.from_env}", error)
    try:
        key_id, created = keys.ensure_key(
            _open_migrated_db(args), key, args.project, scopes, args.description, reviewer
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{'created' if created else 'kept'} key {key_id} (project {args.project}, scopes {' '.join(sorted(scopes))})"
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from feedbackloop.store import keys

    if args.project is not None:
        try:
            names.check_project_id(args.project)
        except ValueError as error:
            return _usage_error("--project", error)
    found = keys.list_keys(_open_migrated_db(args), args.project)
    if not found:
        where = f" in project {args.project}" if args.project else ""
        print(f"no API keys{where}", file=sys.stderr)
        return 0
    for info in found:
        state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
        reviewer = info.reviewer or "-"
        print(f"{info.id}\t{info.project_id}\t{info.scopes}\t{reviewer}\t{state}\t{info.description}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from feedbackloop.store import keys

    if not keys.revoke_key(_open_migrated_db(args), args.key_id):
        print(f"error: no active key '{args.key_id}'", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id} (servers stop accepting it within 30 s)")
    return 0


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (FEEDBACKLOOP_DATA_DIR)")
    parser.add_argument(
        "--database-url", dest="database_url", help="SQLAlchemy URL (FEEDBACKLOOP_DATABASE_URL)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedbackloop", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (the services, the pipeline, or both)")
    serve.add_argument(
        "--role",
        choices=["all", "api", "worker"],
        help="all: the services and the pipeline; api: the services; worker: the pipeline (FEEDBACKLOOP_ROLE)",
    )
    serve.add_argument("--host", help="bind address (FEEDBACKLOOP_HOST)")
    serve.add_argument("--port", type=int, help="port (FEEDBACKLOOP_PORT)")
    _store_args(serve)
    serve.set_defaults(handler=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply migrations (safe to run from several processes at once)")
    upgrade.add_argument("revision", nargs="?", default="head")
    _store_args(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)
    current = db.add_parser("current", help="show the schema revision")
    _store_args(current)
    current.set_defaults(handler=cmd_db_current)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--project", required=True, help=f"project id: {names.PROJECT_RULE}")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"one of {', '.join(auth.Scope)}; repeatable (admin implies the others)",
    )
    create.add_argument(
        "--reviewer",
        help="the reviewer identity this key reviews as (default: key:<key id>); "
        "independent reviews need keys with distinct identities",
    )
    create.add_argument("--description", default="")
    _store_args(create)
    create.set_defaults(handler=_quietly(cmd_keys_create))
    ensure = keys.add_parser(
        "ensure", help="register a key given in an environment variable, unless it exists (for deployments)"
    )
    ensure.add_argument("--project", required=True, help=f"project id: {names.PROJECT_RULE}")
    ensure.add_argument("--scope", action="append", required=True, help="as for `keys create`; repeatable")
    ensure.add_argument("--reviewer", help="as for `keys create`")
    ensure.add_argument("--description", default="")
    ensure.add_argument(
        "--from-env",
        dest="from_env",
        required=True,
        metavar="VAR",
        help="the environment variable holding the key (fbl_<id>_<secret>), e.g. from a Kubernetes Secret",
    )
    _store_args(ensure)
    ensure.set_defaults(handler=_quietly(cmd_keys_ensure))
    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--project")
    _store_args(listing)
    listing.set_defaults(handler=_quietly(cmd_keys_list))
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    _store_args(revoke)
    revoke.set_defaults(handler=_quietly(cmd_keys_revoke))

    from feedbackloop.console import cli as console_cli
    from feedbackloop.recall import cli as recall_cli
    from feedbackloop.routing import cli as routing_cli

    recall_cli.register(sub)
    routing_cli.register(sub)
    console_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    return _run_reporting_errors(handler, args)


SIGPIPE_EXIT = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def _run_reporting_errors(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command; a failure the user can act on is one line on stderr, not a traceback."""
    try:
        status = handler(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is seen below
        return status
    except BrokenPipeError:
        # The reader went away (`feedbackloop ... | head -1`): stop quietly, as a tool killed
        # by SIGPIPE does. Standard output now points at /dev/null, so the interpreter's own
        # flush at exit does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return SIGPIPE_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if getattr(args, "verbose", False):
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
