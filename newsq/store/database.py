"""The backing store: SQLAlchemy 2 Core over SQLite (default, WAL) or PostgreSQL.

Tables:
  ``articles``  one row per stored copy: the first copy of a story carries the text;
                later copies (``duplicate_of`` set) are provenance rows without text;
                a changed text at a known URL is a new revision row of the same story.
  ``urls``      the terminal record of every URL (state, reason, story), so nothing
                that was enqueued is lost even when Redis is gone; a URL found in a
                feed has its row from its enqueueing on (``queued``), for its origin
                (``feed``, ``feed_title``, ``feed_published``).
  ``feeds``     feeds that poll themselves, with their conditional-GET state.
  ``pages``     with ``NEWSQ_KEEP_RAW=1``: each stored copy's HTML, zlib-compressed,
                keyed like its article row (url, content_hash), for WARC export.
  ``events``    the outbox: one event per article row, ``article`` for a row with text,
                ``copy`` for a duplicate copy, written in the row's own transaction
                (:meth:`Store.save_article`); read by :mod:`newsq.store.events`.
  ``webhook_cursors``  per webhook target, the last event id it answered 2xx to,
                how many it took and its last error (:mod:`newsq.store.cursors`).

Every write is idempotent: unique keys plus "insert or do nothing / update", so a
task that runs twice stores nothing twice. The schema is created and migrated by
Alembic on first use (:func:`ensure_schema`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine

from newsq.errors import ConfigError, StoreUnavailable
from newsq.records import QUEUED, TERMINAL

log = logging.getLogger(__name__)

metadata = sa.MetaData()

articles = sa.Table(
    "articles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("final_url", sa.Text),
    sa.Column("canonical_url", sa.Text),
    sa.Column("title", sa.Text),
    sa.Column("author", sa.Text),
    sa.Column("published", sa.String(40)),
    sa.Column("language", sa.String(16)),
    sa.Column("site", sa.Text),
    sa.Column("paywalled", sa.Boolean),
    sa.Column("text", sa.Text),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("story_id", sa.String(64), nullable=False),
    sa.Column("duplicate_of", sa.Text),
    sa.Column("similarity", sa.Float, nullable=False, default=1.0),
    sa.Column("match", sa.String(16), nullable=False, default="new"),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("url", "content_hash", name="uq_articles_url_hash"),
    sa.Index("ix_articles_story", "story_id"),
    sa.Index("ix_articles_fetched", "fetched_at"),
)

urls = sa.Table(
    "urls",
    metadata,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32)),
    sa.Column("detail", sa.Text),
    sa.Column("story_id", sa.String(64)),
    sa.Column("duplicate_of", sa.Text),
    sa.Column("similarity", sa.Float),
    sa.Column("match", sa.String(16)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("feed", sa.Text),
    sa.Column("feed_title", sa.Text),
    sa.Column("feed_published", sa.DateTime(timezone=True)),
    sa.Index("ix_urls_state", "state"),
)

feeds = sa.Table(
    "feeds",
    metadata,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False, default="feed"),
    sa.Column("every_s", sa.Float, nullable=False),
    sa.Column("min_every_s", sa.Float, nullable=False),
    sa.Column("max_every_s", sa.Float, nullable=False),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("next_due", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_polled", sa.DateTime(timezone=True)),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_new", sa.Integer, nullable=False, default=0),
    sa.Column("polls", sa.Integer, nullable=False, default=0),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_feeds_next_due", "next_due"),
)

pages = sa.Table(
    "pages",
    metadata,
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("final_url", sa.Text),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("content_type", sa.Text),
    sa.Column("html_zlib", sa.LargeBinary, nullable=False),
    # the HTTP head and body as fetched or archived (migration 0007), for a replayable WARC
    sa.Column("http_head", sa.Text),
    sa.Column("body_zlib", sa.LargeBinary),
    sa.PrimaryKeyConstraint("url", "content_hash", name="pk_pages"),
)


events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("article_id", sa.Integer, sa.ForeignKey("articles.id"), nullable=False),
    sa.UniqueConstraint("article_id", name="uq_events_article"),
    sqlite_autoincrement=True,  # an id is never given twice, even after a delete
)

webhook_cursors = sa.Table(
    "webhook_cursors",
    metadata,
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("last_id", sa.Integer, nullable=False, default=0),
    sa.Column("delivered", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

ARTICLE, COPY = "article", "copy"
"""The kinds of event: a stored article (the first copy of a story, or a revision),
a copy of a known story (a duplicate, stored without text)."""

EVENTS_LOCK = 472220
"""PostgreSQL advisory lock key held from an event's insert to its commit, so events
commit in id order: a reader that saw event N has seen every event before it."""

OUTCOME_FIELDS = ("url", "state", "reason", "detail", "story_id", "attempts", "updated_at")
"""What ``Store.iter_outcomes`` gives of a failed or skipped URL's record."""


def now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (sqlite:/// or postgresql://, psycopg 3 as the driver)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"bad database URL {url!r}: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.startswith("sqlite"):
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
    return engine


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("newsq.store") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def ensure_schema(engine: Engine) -> None:
    """Create or migrate the schema to the newest revision; raises StoreUnavailable.

    Safe when several processes open a new store at once: the migration runs holding
    the store's one migration lock (:func:`_migrating`), and whoever waited for it
    finds the schema made.
    """
    # current: no Alembic to import and run (every worker process opens the store); a
    # store another process is making now may be busy: Alembic's path below waits for it
    with suppress(sa.exc.OperationalError):
        if (head := newest_revision()) is not None and _revision_of(engine) == head:
            return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    try:
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
        with _migrating(engine) as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")  # reads the revision again, under the lock
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split())  # one line: drivers add hints on new lines
        raise StoreUnavailable(f"database {engine.url!r} unavailable: {reason}") from exc


_REVISION_LINE = re.compile(r'^(down_revision|revision) = (?:"([^"]*)"|None)$', re.MULTILINE)


def newest_revision() -> str | None:
    """The head of the migrations, read from their ``revision``/``down_revision`` lines
    (tests/test_startup.py checks it against Alembic's); None when they do not name
    exactly one, and Alembic decides."""
    revisions, parents = set(), set()
    for path in (resources.files("newsq.store") / "migrations" / "versions").iterdir():
        if path.name.endswith(".py") and path.name != "__init__.py":
            found = dict(_REVISION_LINE.findall(path.read_text()))
            if "revision" not in found:
                return None
            revisions.add(found["revision"])
            parents.add(found.get("down_revision", ""))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _revision_of(engine: Engine) -> str | None:
    """The store's schema revision (Alembic's table), None when it has none yet."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


MIGRATION_LOCK = 472219
"""PostgreSQL advisory lock key held while the schema is created or migrated."""


@contextmanager
def _migrating(engine: Engine) -> Iterator[sa.Connection]:
    """A transaction holding the store's migration lock, committed on leaving.

    PostgreSQL: an advisory lock, released with the transaction. SQLite: ``BEGIN
    IMMEDIATE`` takes the database's one write lock before the version is read. The
    pysqlite driver cannot say it (it begins on its own, and only before DML, so each
    CREATE would commit alone), hence a connection of its own with the driver's
    transactions off and the BEGIN said by this engine.
    """
    if engine.dialect.name != "sqlite" or _sqlite_file(engine.url) is None:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            yield conn
        return
    single = sa.create_engine(engine.url, poolclass=sa.pool.NullPool,
                              connect_args={"timeout": 60, "isolation_level": None})  # fmt: skip
    sa.event.listen(single, "connect", _sqlite_pragmas)
    sa.event.listen(single, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    try:
        with single.begin() as conn:
            yield conn
    finally:
        single.dispose()


def _sqlite_file(url: sa.engine.URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or another dialect."""
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):  # a URI filename: its mode decides
        return None
    return Path(url.database).absolute()


def missing_store(url: str) -> Path | None:
    """The SQLite file of ``url`` when it is not there. None when it is, for in-memory
    and PostgreSQL stores, and for a URL that does not parse (opening it says why)."""
    try:
        path = _sqlite_file(sa.engine.make_url(url))
    except sa.exc.ArgumentError:
        return None
    return path if path is not None and not path.exists() else None


def _insert(engine: Engine, table: sa.Table) -> Any:
    """An INSERT that the dialect can turn into an upsert."""
    if engine.dialect.name == "postgresql":
        # imported here: its dialect (~75 ms, asyncpg's included) is no SQLite store's
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    return sqlite.insert(table)


def _event_insert(engine: Engine) -> Any:
    """The INSERT of an event; on PostgreSQL, one that takes ``EVENTS_LOCK`` first."""
    if engine.dialect.name != "postgresql":
        return sa.insert(events)
    values = sa.select(sa.bindparam("kind", type_=sa.String),
                       sa.bindparam("article_id", type_=sa.Integer))  # fmt: skip
    locked = values.select_from(sa.func.pg_advisory_xact_lock(EVENTS_LOCK))
    return sa.insert(events).from_select(["kind", "article_id"], locked)


class Store:
    """Idempotent reads and writes of articles, URL outcomes and feeds."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # write statements built once and executed with parameters: building one with
        # its values bound for every article is slow in SQLAlchemy
        self._statements: dict[Any, Any] = {}

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> Store:
        """The store at ``url``, its schema created or brought to the newest revision.

        ``create=False`` is for commands that only read: a SQLite file that is not
        there is a ConfigError naming it, and none is made.
        """
        if not create and (path := missing_store(url)) is not None:
            raise ConfigError(f"no store at {path} (NEWSQ_DATABASE_URL={url}): "
                              "nothing has been stored there yet")  # fmt: skip
        engine = make_engine(url)
        ensure_schema(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes -----------------------------------------------------------------

    def save_article(self, row: Mapping[str, Any], outcome: Mapping[str, Any],
                     page: Mapping[str, Any] | None = None) -> bool:  # fmt: skip
        """Store one copy and its URL's terminal record (and its raw ``page`` row, when
        given) in one transaction.

        A new article row gets its event in the same transaction (:meth:`_emit`): an
        event exists exactly when its row was committed. Returns True when the article
        row was new, False when it was already there (a replayed task). Raises
        StoreUnavailable when the database is unreachable.
        """
        values = {"stored_at": now(), **row}
        stmt = self._statement(("articles", tuple(values)), lambda: (
            _insert(self.engine, articles)
            .on_conflict_do_nothing(index_elements=["url", "content_hash"])
            .returning(articles.c.id)
        ))  # fmt: skip
        try:
            with self.engine.begin() as conn:
                article_id = conn.execute(stmt, values).scalar()
                conn.execute(*self._outcome_stmt(outcome))
                if page is not None:
                    raw = self._statement(("pages", tuple(page)), lambda: (
                        _insert(self.engine, pages).on_conflict_do_nothing()
                    ))  # fmt: skip
                    conn.execute(raw, dict(page))
                if article_id is not None:  # last: the event lock is held until commit
                    self._emit(conn, article_id, COPY if row.get("text") is None else ARTICLE)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailable(f"store write failed for {row.get('url')}: {exc}") from exc
        return article_id is not None

    def _emit(self, conn: sa.Connection, article_id: int, kind: str) -> None:
        """Write the event of a new article row, in the row's transaction (the outbox).

        PostgreSQL gives ids when rows are inserted, not when they commit: without the
        lock (taken by the insert itself, before its id is drawn: one round trip) a
        reader could see event N+1 before N commits, and a consumer resuming after N+1
        would never see N. SQLite has one writer at a time already.
        """
        stmt = self._statement("events", lambda: _event_insert(self.engine))
        conn.execute(stmt, {"kind": kind, "article_id": article_id})

    def pages_for(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The kept raw pages of these (url, content_hash) keys; missing keys are absent."""
        if not keys:
            return {}
        query = sa.select(pages).where(sa.tuple_(pages.c.url, pages.c.content_hash).in_(keys))
        with self.engine.connect() as conn:
            return {(r.url, r.content_hash): dict(r._mapping) for r in conn.execute(query)}

    def record_outcome(self, outcome: Mapping[str, Any]) -> None:
        """Upsert a URL's terminal record (skipped, failed, ...); raises StoreUnavailable."""
        try:
            with self.engine.begin() as conn:
                conn.execute(*self._outcome_stmt(outcome))
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailable(f"store write failed for {outcome.get('url')}: {exc}") from exc

    def record_origins(self, found: Mapping[str, Mapping[str, Any]], *, batch: int = 500) -> None:
        """Give each URL (just enqueued) its origin, ``{url: {feed, feed_title,
        feed_published}}``: a ``queued`` row, which its terminal outcome later fills in.
        A URL that has a row keeps it as it is (its first origin). Raises StoreUnavailable."""
        stamp = now()
        rows = [{"feed": None, "feed_title": None, "feed_published": None, **origin,
                 "url": url, "state": QUEUED, "attempts": 0, "updated_at": stamp}
                for url, origin in found.items()]  # fmt: skip
        stmt = self._statement("origins", lambda: (
            _insert(self.engine, urls).on_conflict_do_nothing(index_elements=["url"])
        ))  # fmt: skip
        try:
            with self.engine.begin() as conn:
                for i in range(0, len(rows), batch):
                    conn.execute(stmt, rows[i : i + batch])
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailable(f"store write failed for origins: {exc}") from exc

    def _statement(self, key: Any, build: Callable[[], Any]) -> Any:
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = build()
        return stmt

    def _outcome_stmt(self, outcome: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The upsert of a URL's terminal record, and its parameters."""
        values = {"updated_at": now(), "attempts": 0, **outcome}

        def build() -> Any:
            stmt = _insert(self.engine, urls)
            update = {k: stmt.excluded[k] for k in values if k != "url"}
            return stmt.on_conflict_do_update(index_elements=["url"], set_=update)

        return self._statement(("urls", tuple(values)), build), values

    # -- reads ------------------------------------------------------------------

    def iter_articles(
        self,
        *,
        unique_only: bool = True,
        since: datetime | None = None,
        until: datetime | None = None,
        site: str | None = None,
        batch: int = 500,
    ) -> Iterator[dict[str, Any]]:
        """Stored articles in storage order, streamed in batches (constant memory)."""
        query = sa.select(articles)
        if unique_only:
            query = query.where(articles.c.duplicate_of.is_(None))
        if since is not None:
            query = query.where(articles.c.fetched_at >= since)
        if until is not None:
            query = query.where(articles.c.fetched_at < until)
        if site is not None:
            query = query.where(articles.c.site == site)
        return self._pages(query, articles.c.id, 0, batch)

    def iter_outcomes(
        self, states: Sequence[str], *, reason: str | None = None, batch: int = 500
    ) -> Iterator[dict[str, Any]]:
        """The URL records in ``states`` (with ``reason``, if given), by URL, streamed:
        url, state, reason, detail, story_id, attempts, updated_at."""
        query = sa.select(*(urls.c[name] for name in OUTCOME_FIELDS))
        query = query.where(urls.c.state.in_(states))
        if reason is not None:
            query = query.where(urls.c.reason == reason)
        return self._pages(query, urls.c.url, "", batch)

    def _pages(self, query: Any, key: sa.Column[Any], first: Any,
               batch: int) -> Iterator[dict[str, Any]]:  # fmt: skip
        """The rows of ``query`` in ``key`` order, ``batch`` at a time, each batch read
        after the last key of the one before (keyset paging: constant memory)."""
        last = first
        while True:
            with self.engine.connect() as conn:
                page = query.where(key > last).order_by(key).limit(batch)
                rows = [dict(r._mapping) for r in conn.execute(page)]
            if not rows:
                return
            yield from rows
            last = rows[-1][key.name]

    def recorded(self, candidates: Sequence[str], *, batch: int = 500) -> set[str]:
        """Those of ``candidates`` with a terminal record (one indexed IN per ``batch``);
        raises StoreUnavailable. A ``queued`` row (an origin) is not one: the ledger
        answers for a URL in flight."""
        found: set[str] = set()
        terminal = urls.c.state.in_(sorted(TERMINAL))
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(candidates), batch):
                    part = list(candidates[i : i + batch])
                    query = sa.select(urls.c.url).where(urls.c.url.in_(part), terminal)
                    found.update(conn.scalars(query))
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc
        return found

    def outcomes(
        self, candidates: Sequence[str], *, batch: int = 500
    ) -> dict[str, tuple[str, str | None]]:
        """(state, reason) of those of ``candidates`` with a terminal record (one indexed
        IN per ``batch``); raises StoreUnavailable."""
        found: dict[str, tuple[str, str | None]] = {}
        terminal = urls.c.state.in_(sorted(TERMINAL))
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(candidates), batch):
                    part = list(candidates[i : i + batch])
                    query = sa.select(urls.c.url, urls.c.state, urls.c.reason).where(
                        urls.c.url.in_(part), terminal
                    )
                    found.update(
                        (url, (state, reason)) for url, state, reason in conn.execute(query)
                    )
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc
        return found

    def url_record(self, url: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(urls).where(urls.c.url == url)).first()
        return dict(row._mapping) if row else None

    def state_counts(self) -> dict[str, int]:
        """Terminal outcomes by state (an origin's ``queued`` row is not counted)."""
        query = (
            sa.select(urls.c.state, sa.func.count())
            .where(urls.c.state.in_(sorted(TERMINAL)))
            .group_by(urls.c.state)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query)
            return {state: n for state, n in rows}

    def failure_counts(self) -> dict[str, int]:
        query = (
            sa.select(urls.c.reason, sa.func.count())
            .where(urls.c.state.in_(("failed", "skipped")))
            .group_by(urls.c.reason)
        )
        with self.engine.connect() as conn:
            return {reason or "?": n for reason, n in conn.execute(query)}

    def stories(self, limit: int = 20) -> list[dict[str, Any]]:
        """The stories with most copies: story_id, title, copies, outlets."""
        copies = sa.func.count().label("copies")
        query = (
            sa.select(articles.c.story_id, copies)
            .group_by(articles.c.story_id)
            .order_by(copies.desc(), articles.c.story_id)
            .limit(limit)
        )
        out = []
        with self.engine.connect() as conn:
            for story_id, n in conn.execute(query).all():
                rows = conn.execute(
                    sa.select(articles.c.title, articles.c.site, articles.c.url, articles.c.text)
                    .where(articles.c.story_id == story_id)
                    .order_by(articles.c.id)
                ).all()
                first = next((r for r in rows if r.text is not None), rows[0])
                outlets = sorted({r.site or "?" for r in rows})
                out.append({"story_id": story_id, "title": first.title, "copies": n,
                            "outlets": outlets, "urls": [r.url for r in rows]})  # fmt: skip
        return out

    def article_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(articles)).scalar_one()
            stories = conn.execute(
                sa.select(sa.func.count(sa.distinct(articles.c.story_id)))
            ).scalar_one()
        return {"rows": total, "stories": stories}

    # -- feeds ------------------------------------------------------------------

    def upsert_feed(self, values: Mapping[str, Any]) -> None:
        """Register a feed, or set ``values`` on one already there: its history
        (``added_at``, polls, validators) stays."""
        # the inserted row must be whole even when it only updates: NOT NULL is checked
        # on it before the conflict is seen
        stmt = _insert(self.engine, feeds).values({"added_at": now(), **values})
        update = {k: stmt.excluded[k] for k in values if k not in ("url", "added_at")}
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=["url"], set_=update))

    def upsert_feeds(self, rows: Sequence[Mapping[str, Any]], *, batch: int = 500) -> None:
        """:meth:`upsert_feed` for many feeds (rows of the same keys), in one transaction."""
        if not rows:
            return
        stamp = now()
        values = [{"added_at": stamp, **row} for row in rows]
        stmt = _insert(self.engine, feeds)
        update = {k: stmt.excluded[k] for k in rows[0] if k not in ("url", "added_at")}
        stmt = stmt.on_conflict_do_update(index_elements=["url"], set_=update)
        with self.engine.begin() as conn:
            for i in range(0, len(values), batch):
                conn.execute(stmt, values[i : i + batch])

    def feeds_at(self, wanted: Sequence[str], *, batch: int = 500) -> dict[str, dict[str, Any]]:
        """The rows of those of ``wanted`` that are registered, by URL."""
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), batch):
                query = sa.select(feeds).where(feeds.c.url.in_(list(wanted[i : i + batch])))
                out.update((r.url, dict(r._mapping)) for r in conn.execute(query))
        return out

    def remove_feed(self, url: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(feeds).where(feeds.c.url == url)).rowcount > 0

    def list_feeds(self, *, due_before: datetime | None = None) -> list[dict[str, Any]]:
        query = sa.select(feeds).order_by(feeds.c.next_due)
        if due_before is not None:
            query = query.where(feeds.c.next_due <= due_before)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def update_feed(self, url: str, values: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(feeds).where(feeds.c.url == url).values(**values))

    def get_feed(self, url: str) -> dict[str, Any] | None:
        """The feed's row, or None when it is not registered."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(feeds).where(feeds.c.url == url)).first()
        return dict(row._mapping) if row else None

    def claim_feed(self, url: str, due_before: datetime, lease_until: datetime) -> bool:
        """Take a due feed for polling: True for exactly one of many concurrent claimers.

        One conditional UPDATE moves ``next_due`` past ``due_before``; whoever comes
        second finds the feed no longer due (PostgreSQL re-checks the WHERE after the
        row lock, SQLite serialises writers). Should the poller die, the feed is due
        again at ``lease_until``. Returns False when the feed is not due or is gone.
        """
        stmt = (
            sa.update(feeds)
            .where(feeds.c.url == url, feeds.c.next_due <= due_before)
            .values(next_due=lease_until)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def claim_feeds(self, due_before: datetime, lease_until: datetime, *,
                    batch: int = 500) -> dict[str, datetime]:  # fmt: skip
        """Take every feed due by ``due_before``, as :meth:`claim_feed` takes one, with a
        conditional UPDATE per ``batch`` of them: {url: the time it was due}, oldest due
        first, of the feeds this caller won (a concurrent claimer wins the others)."""
        query = (
            sa.select(feeds.c.url, feeds.c.next_due)
            .where(feeds.c.next_due <= due_before)
            .order_by(feeds.c.next_due)
        )
        with self.engine.connect() as conn:
            due: dict[str, datetime] = dict(conn.execute(query).tuples().all())
        urls = list(due)
        won: set[str] = set()
        for i in range(0, len(urls), batch):
            stmt = (
                sa.update(feeds)
                .where(feeds.c.url.in_(urls[i : i + batch]), feeds.c.next_due <= due_before)
                .values(next_due=lease_until)
                .returning(feeds.c.url)
            )
            with self.engine.begin() as conn:
                won.update(conn.scalars(stmt))
        return {url: due[url] for url in urls if url in won}
