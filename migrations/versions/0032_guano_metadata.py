"""GUANO metadata on recordings (issue 25): ``ranger.recordings`` shows what a file's GUANO
block said at ingest (``soundscape.formats.guano``, stored in ``recordings.metadata``, a column
of 0001): ``device_make``, ``device_model``, ``device_serial``, the file's ``latitude`` and
``longitude``, and the whole block as ``guano`` (jsonb). No table changes: the upgrade
re-applies sql/catalog.sql, whose view appends the columns.

Downgrade: the view without them (sql/frozen/0032_downgrade.sql; a view cannot lose columns
by ``CREATE OR REPLACE``, so it is dropped and made again, with its SELECT grants back). The
metadata stays in ``recordings.metadata``.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from soundscape.resources import read_sql

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

# The roles (readers) that may read ranger.recordings, other than its owner.
_READERS = """
SELECT DISTINCT a.grantee::regrole::text
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.oid = 'ranger.recordings'::regclass AND a.privilege_type = 'SELECT'
   AND a.grantee <> 0 AND a.grantee <> c.relowner
"""


def upgrade() -> None:
    op.execute(read_sql("catalog.sql"))


def downgrade() -> None:
    readers = op.get_bind().execute(sa.text(_READERS)).scalars().all()
    op.execute("DROP VIEW ranger.recordings")
    op.execute(read_sql("frozen/0032_downgrade.sql"))
    for role in readers:  # regrole::text is already quoted where it needs to be
        op.execute(f"GRANT SELECT ON ranger.recordings TO {role}")
