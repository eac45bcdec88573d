"""Review queue undo: a reviewer may take back their own web verdicts (issue 23).

Reviewers may only insert annotations (migration 0014, ``soundscape.roles``): no UPDATE, no
DELETE. The review queue's undo needs one more right, and only this one: the SECURITY DEFINER
function ``public.retract_verdict(id)`` deletes annotation ``id`` when its author is the
calling login role (``session_user``) and its source is ``web``, i.e. a verdict that reviewer
gave on the web page; anything else is left alone (the function returns false). EXECUTE is
granted to the reviewers' group ``soundscape_reviewer`` (here, when it exists, and by
``create_reviewer``, ``roles.REVIEWER_GRANTS``) and to nobody else.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-08
"""

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE OR REPLACE FUNCTION public.retract_verdict(p_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    -- session_user: the login role (current_user is the owner inside this function)
    DELETE FROM public.annotations
     WHERE id = p_id AND author = session_user AND source = 'web';
    RETURN FOUND;
END
$fn$;
REVOKE ALL ON FUNCTION public.retract_verdict(bigint) FROM PUBLIC;
DO $do$
BEGIN
    IF to_regrole('soundscape_reviewer') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION public.retract_verdict(bigint) TO soundscape_reviewer;
    END IF;
END
$do$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.retract_verdict(bigint)")
