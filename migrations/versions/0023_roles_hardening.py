"""Roles that hold their limits (issue 24): what PUBLIC may not do in the soundscape database.

A reader or reviewer session can always ``SET default_transaction_read_only = off``, so
privileges, not settings, must stop it from writing or blocking:

- no TEMPORARY right on the database for PUBLIC (temp tables are not capped by
  ``temp_file_limit``);
- no EXECUTE for PUBLIC on the large-object functions (``lo_from_bytea``, ``lo_create``,
  ``lowrite``, ...: large objects outlive the session) nor on the advisory-lock functions (a
  reader holding ``soundscape.spaces`` blocked ingest forever); the database owner keeps the
  advisory locks ingest takes (a superuser needs no grant);
- reviewers made before this release get limits re-applied at every login, as readers have
  (statement timeout, ``work_mem``, ``temp_file_limit``, idle-in-transaction timeout).

Function privileges can only be changed by a superuser (the owner of ``pg_catalog``): run by
another role, this migration revokes TEMPORARY only, and ``soundscape db create-reader`` /
``create-reviewer`` name what is left open (soundscape.roles.lock_down_database). TEMPORARY
is a privilege of the database itself, which CREATE DATABASE ... TEMPLATE and restores do not
copy; creating a reader or reviewer revokes it again.

Downgrade gives PUBLIC PostgreSQL's defaults back (``lo_import``/``lo_export`` stay revoked, as
PostgreSQL ships them); reviewers' limits stay (they are data of the roles, like the roles).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.db import raw_connection
from soundscape.roles import LOCKDOWN_SQL, UNLOCK_SQL, refresh_reviewer_limits

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(LOCKDOWN_SQL)
    refresh_reviewer_limits(raw_connection(op.get_bind()))


def downgrade() -> None:
    op.execute(UNLOCK_SQL)
