"""Search that never silently misses (issue 22): measured recall per space, and its guard.

Table ``recent_queries``: the newest query vectors searched in each space (kept to a few
hundred), which the checks measure along with stored windows. Table ``index_checks``: each check of a space's HNSW index against exact answers
(``soundscape spaces check``, ``soundscape.recall``): when, which index (its type and OID, so a
rebuilt or dropped index has no check), how many windows and queries, recall@10 and its worst
decile at auto's ef_search, and the guard it sets: 'none', 'ef' (auto searches with at least
``guard_ef``) or 'exact' (auto scans exactly) until a later check measures well again.

Re-applies sql/catalog.sql (``ranger.index_recall``; ``ranger.spaces`` shows the newest check),
sql/search.sql (auto's exact-scan limit from the measured budget, ``ranger._exact_limit``; its
ef_search rule in one function, ``ranger._ef_search``, with a higher floor; the guard; the query
normalised) and sql/analytics.sql (the same limit and guard; a NULL strategy is an error).

Downgrade drops the table; the functions stay (they read it only when it exists).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE index_checks (
            id                  bigserial PRIMARY KEY,
            space_id            integer NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
            checked_at          timestamptz NOT NULL DEFAULT now(),
            index_type          text NOT NULL,
            index_oid           oid NOT NULL,
            n_windows           bigint NOT NULL,
            n_queries           integer NOT NULL,
            k                   integer NOT NULL,
            ef_search           integer NOT NULL,
            recall              real NOT NULL,
            recall_worst_decile real NOT NULL,
            recall_min          real NOT NULL,
            guard               text NOT NULL CHECK (guard IN ('none', 'ef', 'exact')),
            guard_ef            integer,
            guard_recall        real,
            guard_worst_decile  real,
            seconds             real NOT NULL,
            details             jsonb NOT NULL DEFAULT '{}'::jsonb,
            CHECK ((guard = 'ef') = (guard_ef IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX index_checks_space ON index_checks (space_id, checked_at DESC)")
    # the newest query vectors searched in each space (soundscape.recall.log_query): what
    # people really ask is what a recall check must measure, not only stored windows
    op.execute(
        """
        CREATE TABLE recent_queries (
            id          bigserial PRIMARY KEY,
            space_id    integer NOT NULL REFERENCES spaces(id) ON DELETE CASCADE,
            searched_at timestamptz NOT NULL DEFAULT now(),
            embedding   vector NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX recent_queries_space ON recent_queries (space_id, id DESC)")
    op.execute(read_sql("catalog.sql"))
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("analytics.sql"))


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS recent_queries")
    op.execute("DROP TABLE IF EXISTS index_checks")
