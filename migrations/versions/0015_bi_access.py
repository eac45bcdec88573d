"""BI tools: the ids and vectors the search functions take, readable by the reader (issue 13).

``ranger.spaces`` (space ids, model, dimension), ``ranger.labels`` (classifier labels and their
ids) and ``ranger.window_vectors`` (a window's vector, for "more like this") in
sql/catalog.sql, so a read-only reader without access to the base tables can call
``ranger.search_vector``, ``search_labels``, ``similar_windows``, ``duplicate_pairs`` and
``filtered_windows``. Roles that already read ranger (``soundscape db create-reader``) get
SELECT on the new views.

Downgrade drops the three views.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

NEW_VIEWS = ("ranger.spaces", "ranger.labels", "ranger.window_vectors")

# Every role granted SELECT on ranger.recordings (the readers) may read the new views too.
GRANT_TO_READERS = """
DO $grant$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole::text AS role
               FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.oid = 'ranger.recordings'::regclass AND a.privilege_type = 'SELECT'
                AND a.grantee <> 0 AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT SELECT ON %s TO %s', '{views}', r.role);
    END LOOP;
END
$grant$;
""".format(views=", ".join(NEW_VIEWS))


def upgrade() -> None:
    op.execute(read_sql("catalog.sql"))
    op.execute(GRANT_TO_READERS)


def downgrade() -> None:
    for view in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
