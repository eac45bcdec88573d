"""Citus: lay soundscape's tables out over a Citus cluster (run by ``soundscape db upgrade``).

When the database is a Citus coordinator (the ``citus`` extension is created in it),
``distribute`` turns the tables the migrations created into Citus tables, once, after the
migrations (every later upgrade only handles tables that are new since):

- ``segments`` (the windows and their vectors) is distributed by **hash of the window id**
  (``id``), so every shard holds an even share of every sensor, date and space; tables keyed
  by a window (``segment_scores``, ``detections``, ``classifications``, ``anomaly_scores``,
  ``classifier_scored``, ``classifier_detections``, and any later table with a foreign key to
  ``segments``) are distributed by their ``segment_id`` and co-located with it, so each of
  their joins with ``segments`` runs inside one shard. Why the id and not the sensor or the
  recording: it is already in every key (``(space_id, id)`` and the ``segment_id`` of the
  tables above), so no key, foreign key or query changes; shards are even whatever the number
  of sensors (50 recorders over 32 shards by sensor would leave shards twice as big as others,
  and one busy sensor one hot shard); and a top-k vector search has to visit every shard
  anyway unless it is filtered to a few sensors (docs/scaling.md has the measurements).
- The job queue (``jobs``), ``ingest_errors``, Alembic's version table and tables with
  triggers of their own (``annotations``: the reviewer rule of migration 0014) stay tables of
  the coordinator: ``SELECT ... FOR UPDATE SKIP LOCKED`` works there as on one server, and a
  trigger runs where it was written. (Citus makes ``annotations`` a *Citus local table* by
  itself, for its foreign key to the reference table ``recordings``: still one shard, on the
  coordinator.) A shard query may not join them, so queries that need annotations beside the
  windows read the label's annotations first (``ranger.search_classifier``).
- Every other table (sensors, recordings, spaces, labels, concepts, runs, classifiers,
  occurrence lists, transcripts) becomes a *reference table*, copied to every node, so it
  joins with any shard locally.
- Each shard of a space's partition gets the space's HNSW index (Citus propagates the
  ``CREATE INDEX`` of ``soundscape.spaces``); new spaces created later are distributed the
  same way automatically (a partition of a distributed table is distributed).
- Settings stored as the database's defaults on every node (``NODE_SETTINGS``): pgvector's
  query settings do not travel from the coordinator's session to the worker connections that
  run the shard queries, so ``hnsw.iterative_scan = relaxed_order`` (and ``ef_search``,
  ``max_scan_tuples``) are defaults there, and a filtered HNSW search on a shard still returns
  k rows; ``citus.multi_shard_modify_mode = sequential`` (one connection per node in a
  transaction) lets a transaction that read shards write reference tables (``train``).

The layout is also a library call for notebooks: ``layout(conn)`` says where each table is.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from soundscape.errors import DatabaseError

#: the table everything else is co-located with, and its distribution column
WINDOWS = "segments"
WINDOW_KEY = "id"
#: tables that stay plain tables on the coordinator (SKIP LOCKED queue, local bookkeeping,
#: the ingest's own checkpoints: written as a file is embedded, never joined with windows)
LOCAL_TABLES = (
    "jobs",
    "ingest_errors",
    "ingest_checkpoints",
    "alembic_version",
    "reader_settings",
)
#: tables keyed by a window, distributed by this column and co-located with ``segments``
#: (a table not listed here with a foreign key to ``segments`` is found in the catalog)
WINDOW_TABLES = {
    "segment_scores": "segment_id",
    "detections": "segment_id",
    "classifications": "segment_id",
    "anomaly_scores": "segment_id",
    "classifier_scored": "segment_id",
    "classifier_detections": "segment_id",
}
#: shards of ``segments`` per worker node: one. A query then runs one HNSW search per worker
#: (S searches of n/S windows cost more than one of n: each walks the graph from the top), and
#: a transaction that has read shards may write reference tables (Citus refuses that after a
#: query that used several connections to one node: "cannot modify table ... because there
#: was a parallel operation on a distributed table"). More shards per node only help exact
#: scans, which the auto strategy keeps for few rows anyway (docs/scaling.md).
SHARDS_PER_WORKER = 1
#: settings stored as the database's defaults on every node (``ALTER DATABASE ... SET`` on the
#: coordinator, which Citus propagates): pgvector's, for the shard queries of vector searches
#: (ranger.search_vector sets the same for its own call on the coordinator, but function-level
#: settings do not travel to the workers; ef_search is its usual value), and one connection per
#: node in a transaction, so that writing a reference table after reading shards always works
NODE_SETTINGS = {
    "hnsw.iterative_scan": "relaxed_order",
    "hnsw.ef_search": "400",
    "hnsw.max_scan_tuples": "20000",
    "citus.multi_shard_modify_mode": "sequential",
}


@dataclass(frozen=True)
class Placement:
    """Where a table lives on a Citus cluster."""

    table: str
    kind: str  # distributed | reference | local
    column: str | None = None  # the distribution column of a distributed table
    shards: int = 0


def citus_version(conn: Connection) -> str | None:
    """The version of the ``citus`` extension created in this database, else None."""
    value = conn.execute(
        sa.text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    ).scalar()
    return str(value) if value is not None else None


def workers(conn: Connection) -> list[tuple[str, int]]:
    """The active worker nodes (host, port) of the cluster."""
    rows = conn.execute(
        sa.text("SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY 1, 2")
    )
    return [(str(r[0]), int(r[1])) for r in rows]


def _tables(conn: Connection) -> list[str]:
    """Ordinary and partitioned tables of the public schema (no partitions)."""
    return list(
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
                "ORDER BY c.relname"
            )
        ).scalars()
    )


def _foreign_keys(conn: Connection) -> list[tuple[str, str, list[str], list[str]]]:
    """(table, referenced table, columns, referenced columns) of every foreign key in public."""
    rows = conn.execute(
        sa.text(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, "
            "ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) "
            "      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n "
            "      ORDER BY k.o), "
            "ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o) "
            "      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n "
            "      ORDER BY k.o) "
            "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE c.contype = 'f' AND n.nspname = 'public' AND NOT t.relispartition "
            "AND c.conparentid = 0"
        )
    )
    return [(r[0], r[1], list(r[2]), list(r[3])) for r in rows]


def _with_triggers(conn: Connection) -> set[str]:
    """Tables of public with triggers of their own (not those behind foreign keys)."""
    return set(
        conn.execute(
            sa.text(
                "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND NOT t.tgisinternal"
            )
        ).scalars()
    )


def plan(conn: Connection) -> list[Placement]:
    """Where every table of the schema belongs (see the module docstring), in the order to
    create them: reference tables referenced by others first, then ``segments``, then the
    tables co-located with it. A table with a trigger of its own (``annotations``: the
    reviewer rule of migration 0014) stays on the coordinator: Citus copies a trigger to every
    shard, where its own statements would run on a worker, and refuses it by default."""
    tables = _tables(conn)
    fks = _foreign_keys(conn)
    local = set(LOCAL_TABLES) | _with_triggers(conn)
    window_tables = dict(WINDOW_TABLES)
    for table, ref, cols, ref_cols in fks:
        if ref == WINDOWS and table not in window_tables and WINDOW_KEY in ref_cols:
            window_tables[table] = cols[ref_cols.index(WINDOW_KEY)]
    reference = [t for t in tables if t not in local and t != WINDOWS and t not in window_tables]
    # referenced tables before the tables that reference them
    ordered: list[str] = []
    pending = set(reference)
    while pending:
        ready = sorted(
            t
            for t in pending
            if not any(src == t and ref in pending and ref != t for src, ref, _, _ in fks)
        )
        if not ready:  # a cycle: Citus resolves it if all are converted; keep a fixed order
            ready = sorted(pending)
        ordered += ready
        pending -= set(ready)
    out = [Placement(t, "reference") for t in ordered]
    if WINDOWS in tables:
        out.append(Placement(WINDOWS, "distributed", WINDOW_KEY))
    out += [Placement(t, "distributed", c) for t, c in sorted(window_tables.items()) if t in tables]
    out += [Placement(t, "local") for t in tables if t in local]
    return out


def layout(conn: Connection) -> list[Placement]:
    """Where each table of the schema is now: kind 'local' for tables Citus does not know and
    for Citus local tables (one shard on the coordinator: Citus makes a plain table one when
    it gets a foreign key to a reference table, e.g. ``annotations`` to ``recordings``)."""
    rows = {
        r[0]: r
        for r in conn.execute(
            sa.text(
                "SELECT logicalrelid::regclass::text, partmethod, "
                "column_to_column_name(logicalrelid, partkey), "
                "(SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid), "
                "repmodel "
                "FROM pg_dist_partition p"
            )
        )
    }
    out = []
    for table in _tables(conn):
        row = rows.get(table)
        # reference tables: replication model 't' (a copy on every node); Citus local: 's'
        if row is None or row[1] == "n" and (row[3] == 0 or row[4] != "t"):
            out.append(Placement(table, "local"))
        elif row[1] == "n":
            out.append(Placement(table, "reference", shards=int(row[3])))
        else:
            out.append(Placement(table, "distributed", row[2], int(row[3])))
    return out


def distribute(conn: Connection, shard_count: int | None = None) -> list[str]:
    """Make the tables Citus tables as ``plan`` says; returns what was done, for the user.

    Idempotent: tables that are Citus tables already are left alone (a later migration's new
    tables are handled by the next upgrade). ``shard_count`` (default ``SHARDS_PER_WORKER`` per
    worker, at least 2) only matters the first time ``segments`` is distributed.
    """
    nodes = workers(conn)
    if not nodes:
        raise DatabaseError(
            "this database has the citus extension but no active worker nodes; add them on "
            "the coordinator with SELECT citus_add_node('host', port), then run "
            "`soundscape db upgrade` again"
        )
    done = {p.table: p for p in layout(conn) if p.kind != "local"}
    shards = shard_count or SHARDS_PER_WORKER * len(nodes)
    notes: list[str] = []
    # DDL on many shards in one transaction: one connection per worker, so the reference
    # tables created in it are visible to the shards that reference them
    conn.execute(sa.text("SET LOCAL citus.multi_shard_modify_mode = 'sequential'"))
    steps = plan(conn)
    # Citus distributes no table that plain tables still reference: the foreign keys of the
    # window tables go first and come back once both sides are co-located
    moving = {p.table for p in steps if p.kind == "distributed" and p.table not in done}
    restore = []
    for name, table, definition in conn.execute(
        sa.text(
            "SELECT c.conname, c.conrelid::regclass::text, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c WHERE c.contype = 'f' AND c.conparentid = 0 "
            "AND c.confrelid = CAST(:w AS regclass)"
        ),
        {"w": WINDOWS},
    ):
        if table in moving and table != WINDOWS:
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
            restore.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for p in steps:
        if p.kind == "local" or p.table in done:
            continue
        if p.kind == "reference":
            conn.execute(sa.text("SELECT create_reference_table(:t)"), {"t": p.table})
            notes.append(f"{p.table}: reference table")
        elif p.table == WINDOWS:
            conn.execute(
                sa.text("SELECT create_distributed_table(:t, :c, shard_count => :n)"),
                {"t": p.table, "c": p.column, "n": shards},
            )
            notes.append(f"{p.table}: distributed by hash of {p.column}, {shards} shards")
        else:
            conn.execute(
                sa.text("SELECT create_distributed_table(:t, :c, colocate_with => :w)"),
                {"t": p.table, "c": p.column, "w": WINDOWS},
            )
            notes.append(f"{p.table}: distributed by {p.column}, co-located with {WINDOWS}")
    for statement in restore:
        conn.execute(sa.text(statement))
    notes += configure_nodes(conn)
    return notes


def configure_nodes(conn: Connection) -> list[str]:
    """Store ``NODE_SETTINGS`` as this database's defaults on every node; returns a note when
    something changed."""
    dbname = conn.execute(sa.text("SELECT current_database()")).scalar()
    stored = conn.execute(
        sa.text(
            "SELECT coalesce((SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 "
            "AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "), '{}')"
        )
    ).scalar()
    missing = {k: v for k, v in NODE_SETTINGS.items() if f"{k}={v}" not in (stored or [])}
    if not missing:
        return []
    ident = conn.execute(sa.text("SELECT quote_ident(:d)"), {"d": dbname}).scalar()
    for setting, value in missing.items():
        # on the coordinator: Citus propagates ALTER DATABASE ... SET to every worker (a
        # worker refuses it directly)
        conn.execute(sa.text(f"ALTER DATABASE {ident} SET {setting} = '{value}'"))
    return [
        "every node: "
        + ", ".join(f"{k} = {v}" for k, v in missing.items())
        + f" (defaults of database {dbname})"
    ]


def prepare(engine: Engine, shard_count: int | None = None) -> list[str]:
    """After the migrations: on a Citus coordinator, distribute (``distribute``); elsewhere
    nothing. Returns notes for the user."""
    with engine.begin() as conn:
        version = citus_version(conn)
        if version is None:
            return []
        notes = distribute(conn, shard_count)
        n = len(workers(conn))
    if notes:
        notes.insert(0, f"Citus {version} coordinator with {n} worker(s):")
        # the database defaults (NODE_SETTINGS) apply to new sessions only
        engine.dispose()
    return notes


#: how Citus names the node behind a failed shard query (connecting, or a query under way)
_NODE = re.compile(
    r"(?:connection to the remote node|while executing command on|could not connect to "
    r"node) (?:\S+@)?(\S+:\d+)"
)


_LOST = re.compile(
    r"connection to the remote node|server closed the connection|terminating connection|"
    r"connection not open|could not receive|lost connection|connection.*(?:refused|reset)",
    re.IGNORECASE,
)


def node_error(exc: BaseException) -> DatabaseError | None:
    """A ``DatabaseError`` for a database error that says a Citus node could not be reached
    (stopped, restarting or cut off mid-query); None for any other error."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    m = _NODE.search(text)
    # a node's address alone is not enough: Citus names it for any error raised there
    state = str(getattr(orig, "sqlstate", "") or "")
    if m is None or not (state[:2] == "08" or state[:3] == "57P" or _LOST.search(text)):
        return None
    reason = " ".join(text.strip().splitlines()[0].split())
    return DatabaseError(
        f"the Citus cluster lost {m.group(1).rstrip('.,:')} during the query ({reason}); "
        "nothing was changed. Start the node again (SELECT * FROM "
        "citus_check_cluster_node_health() on the coordinator shows which nodes answer), then "
        "run the same command again"
    )


# -- a throwaway cluster on this machine (tests, benchmarks) ---------------------------------

#: where Debian's PostgreSQL 15 lives (../shared/vendor/citus/build.sh installs Citus there)
PG15 = Path("/usr/lib/postgresql/15")


def citus_missing(pg: Path = PG15) -> str | None:
    """Why a local Citus cluster cannot start here (None when it can)."""
    if not (pg / "bin" / "pg_ctl").exists():
        return f"PostgreSQL 15 is not installed ({pg}/bin/pg_ctl missing)"
    for ext in ("citus", "vector"):
        if not (pg / "lib" / f"{ext}.so").exists():
            return f"{ext} is not installed for PostgreSQL 15 ({pg}/lib/{ext}.so missing)"
    return None


def free_port_range(count: int, start: int = 19700, stop: int = 29000) -> int:
    """A port p such that p .. p + count - 1 are all free on 127.0.0.1: the first from a
    point between ``start`` and ``stop`` that depends on the process id, so that clusters
    started at the same moment by two processes do not pick the same ports."""
    port = start + (os.getpid() * 10) % max(1, stop - start - 100 - count)
    while port + count <= stop:
        for i in range(count):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port + i)) == 0:
                    port += i + 1
                    break
        else:
            return port
    raise DatabaseError(f"no {count} consecutive free ports between {start} and {stop}")


@dataclass
class LocalCluster:
    """A coordinator and ``workers`` workers on 127.0.0.1, ports ``port`` .. ``port +
    workers`` (what ``../shared/vendor/citus/cluster.sh`` starts, on any port, so a test
    never meets a developer's cluster on 9700). Data directories and sockets live in
    ``directory``; trust authentication: for tests and benchmarks only. Run as root, the
    servers run as the ``postgres`` system user."""

    directory: Path
    workers: int = 2
    port: int = 9700
    pg: Path = PG15
    settings: tuple[tuple[str, str], ...] = ()

    def url(self, node: int = 0, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port + node}/{database}"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise DatabaseError(f"{' '.join(args[:2])} failed: {(out.stderr or out.stdout)[-500:]}")

    def _data(self, node: int) -> Path:
        return self.directory / str(self.port + node)

    def start_node(self, node: int) -> None:
        data = self._data(node)
        if not data.exists():
            self._run(
                str(self.pg / "bin" / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"
            )
            conf = [
                "shared_preload_libraries = 'citus'",
                *(f"{k} = '{v}'" for k, v in self.settings),
            ]
            with open(data / "postgresql.conf", "a") as f:
                f.write("\n".join(conf) + "\n")
        self._run(
            str(self.pg / "bin" / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            f"{data}.log",
            "-o",
            f"-p {self.port + node} -k {self.directory} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop_node(self, node: int, mode: str = "fast") -> None:
        self._run(
            str(self.pg / "bin" / "pg_ctl"), "-D", str(self._data(node)), "-m", mode, "-w", "stop"
        )

    def start(self) -> LocalCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        for node in range(self.workers + 1):
            self.start_node(node)
            with psycopg.connect(self.url(node), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", [self.port])
            for node in range(1, self.workers + 1):
                known = conn.execute(
                    "SELECT 1 FROM pg_dist_node WHERE nodeport = %s", [self.port + node]
                ).fetchone()
                if not known:
                    conn.execute("SELECT citus_add_node('127.0.0.1', %s)", [self.port + node])
        return self

    def stop(self) -> None:
        for node in range(self.workers, -1, -1):
            if (self._data(node) / "postmaster.pid").exists():
                self.stop_node(node)
