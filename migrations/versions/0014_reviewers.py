"""Reviewers: people who sign in to the web page (``soundscape serve``) and write annotations.

A reviewer is a PostgreSQL login role that is a member of the group role
``soundscape_reviewer`` (``soundscape db create-reviewer NAME``, soundscape.roles), which may
only insert annotations. This migration adds the rule the database enforces on every row a
reviewer inserts, whatever client the reviewer uses (the web page or psql):

- ``author`` is the reviewer's login name and ``source`` is ``web`` (nobody writes in another
  person's name), ``created_at`` is now;
- a reviewer's new verdict on a window (``segment_id``) and label replaces that reviewer's
  earlier web verdict on it: a corrected judgement, not a second vote (``annotate hit`` updates
  in place for the same reason; a reviewer may not UPDATE, so the trigger, run as the table's
  owner, removes the earlier row).

Rows inserted by anyone else (the owner, a superuser) are left as they are.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE OR REPLACE FUNCTION public.annotations_reviewer_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    -- session_user: the login role (inside this SECURITY DEFINER function current_user is the
    -- owner). A superuser "has" every role, hence the rolsuper test.
    IF to_regrole('soundscape_reviewer') IS NULL THEN
        RETURN NEW;
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
       OR NOT pg_has_role(session_user, 'soundscape_reviewer', 'USAGE') THEN
        RETURN NEW;
    END IF;
    NEW.author := session_user;
    NEW.source := 'web';
    NEW.created_at := now();
    IF NEW.segment_id IS NOT NULL THEN
        DELETE FROM public.annotations
         WHERE segment_id = NEW.segment_id AND label = NEW.label
           AND author = NEW.author AND source = 'web';
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION public.annotations_reviewer_row() FROM PUBLIC;
DROP TRIGGER IF EXISTS annotations_reviewer_row ON public.annotations;
CREATE TRIGGER annotations_reviewer_row BEFORE INSERT ON public.annotations
    FOR EACH ROW EXECUTE FUNCTION public.annotations_reviewer_row();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS annotations_reviewer_row ON public.annotations")
    op.execute("DROP FUNCTION IF EXISTS public.annotations_reviewer_row()")
