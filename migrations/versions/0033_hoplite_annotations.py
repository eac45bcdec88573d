"""Annotations imported from perch-hoplite databases (issue 25): source ``hoplite``.

``soundscape import hoplite`` stores a hoplite database's labels in ``annotations`` with
``source = 'hoplite'`` (hoplite's ``provenance`` as the author), so that they can be told
apart from those made with soundscape and imported again without duplicates. The check on
``annotations.source`` is rebuilt with the values it allows now plus ``hoplite`` (read from
the constraint itself, so that another migration's new sources are kept whatever the order).
An import resumes by the rule of ingest (a recording whose windows are in the space, in
``recording_spaces``, is skipped): no table of its own.

Downgrade turns hoplite annotations into ``import`` ones (a note says where they came from)
and rebuilds the check without ``hoplite``.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-08
"""

from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

#: rebuild the check on annotations.source with the values it allows, plus or minus one
_REBUILD = """
DO $$
DECLARE
    c record;
    allowed text[] := ARRAY[]::text[];
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
              WHERE conrelid = 'public.annotations'::regclass AND contype = 'c'
                AND pg_get_constraintdef(oid) ~ '\\msource\\M' LOOP
        allowed := allowed || ARRAY(SELECT m[1] FROM regexp_matches(c.def, '''([^'']+)''', 'g') m);
        EXECUTE format('ALTER TABLE public.annotations DROP CONSTRAINT %I', c.conname);
    END LOOP;
    IF cardinality(allowed) = 0 THEN
        allowed := ARRAY['cli', 'import', 'review', 'web'];
    END IF;
    allowed := ARRAY(SELECT DISTINCT v FROM unnest(allowed || ARRAY[{add}]::text[]) v
                      WHERE v <> ALL (ARRAY[{remove}]::text[]) ORDER BY v);
    -- written as ARRAY['a', ...] (as 0008's IN list reads back), which the loop above parses
    EXECUTE format('ALTER TABLE public.annotations ADD CONSTRAINT annotations_source_check '
                   'CHECK (source = ANY (ARRAY[%s]::text[]))',
                   (SELECT string_agg(quote_literal(v), ', ') FROM unnest(allowed) v));
END $$
"""


def upgrade() -> None:
    op.execute(_REBUILD.format(add="'hoplite'", remove=""))


def downgrade() -> None:
    op.execute(
        "UPDATE annotations SET source = 'import', note = left(concat_ws(' ', note, "
        "'(imported from a hoplite database)'), 10000) WHERE source = 'hoplite'"
    )
    op.execute(_REBUILD.format(add="", remove="'hoplite'"))
