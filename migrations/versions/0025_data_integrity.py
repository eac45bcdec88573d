"""Data integrity: annotations the database itself keeps sane, one location rule (issue 24).

Annotations (whoever writes them: the CLI, an import, the web page, a reviewer in psql):

- a label and an author are one line of at most 200 characters (no tab, line break or other
  control character; a 1 MB label broke the label index), a note at most 10,000 characters;
- a trigger (``annotations_integrity_row``, run as the table's owner) checks each new or moved
  row against its recording: the span ends at most 10 ms after the recording's end (a reviewer
  stored 1e9 s on a 10 s recording), a band stays at or below the recording's Nyquist
  frequency (+1 Hz), and ``segment_id`` is a window of that same recording.

The constraints are added NOT VALID and then validated: a database holding older rows that
break them keeps those rows (a NOTICE says so; ``soundscape annotate list`` finds them) while
every new or changed row is checked.

``ranger.refresh_detections`` (sql/search.sql): label concepts leave out classes BirdNET's
occurrence model finds implausible at the window's sensor and week, the rule of
``search_labels`` and ``species_daily`` (40 "birdsong" detections at a Berlin sensor where
``species_daily`` had none); the label concepts' detections are recomputed.
``ranger.search_speech`` (sql/speech.sql) refuses a query over 1,000 characters (a 1.2 MB one
ran 31 s into "stack depth limit exceeded").

Downgrade drops the trigger and constraints and restores both functions
(sql/frozen/0025_downgrade.sql); the detections stay as computed.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

#: (name, check) of the annotations' new constraints
CONSTRAINTS = [
    (
        "annotations_label_line",
        "char_length(label) <= 200 AND label !~ '[\\x01-\\x1f\\x7f-\\x9f]'",
    ),
    (
        "annotations_author_line",
        "char_length(author) <= 200 AND author !~ '[\\x01-\\x1f\\x7f-\\x9f]'",
    ),
    ("annotations_note_length", "char_length(note) <= 10000"),
]

TRIGGER = """
CREATE OR REPLACE FUNCTION public.annotations_integrity_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    r record;
BEGIN
    SELECT duration_s, sample_rate INTO r FROM public.recordings WHERE id = NEW.recording_id;
    IF NOT FOUND THEN
        RETURN NEW;  -- the foreign key refuses it, with its own message
    END IF;
    IF NEW.end_s > r.duration_s + 0.01 THEN
        RAISE EXCEPTION 'annotation end % s is beyond the end of recording % (% s)',
            NEW.end_s, NEW.recording_id, r.duration_s
            USING ERRCODE = 'check_violation',
                  HINT = 'an annotation spans part of its recording: 0 <= start < end <= duration';
    END IF;
    IF greatest(NEW.low_hz, NEW.high_hz) > r.sample_rate / 2.0 + 1 THEN
        RAISE EXCEPTION 'annotation band up to % Hz is above % Hz, the Nyquist frequency of '
                        'recording %', greatest(NEW.low_hz, NEW.high_hz), r.sample_rate / 2.0,
                        NEW.recording_id
            USING ERRCODE = 'check_violation',
                  HINT = 'a recording holds no frequency above half its sample rate';
    END IF;
    IF NEW.segment_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM public.segments g
            WHERE g.recording_id = NEW.recording_id AND g.id = NEW.segment_id) THEN
        RAISE EXCEPTION 'window % is not a window of recording %', NEW.segment_id,
            NEW.recording_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'segment_id names the window of the same recording a verdict is about';
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION public.annotations_integrity_row() FROM PUBLIC;
DROP TRIGGER IF EXISTS annotations_integrity_row ON public.annotations;
CREATE TRIGGER annotations_integrity_row
    BEFORE INSERT OR UPDATE OF recording_id, start_s, end_s, low_hz, high_hz, segment_id
    ON public.annotations
    FOR EACH ROW EXECUTE FUNCTION public.annotations_integrity_row();
"""


def upgrade() -> None:
    for name, check in CONSTRAINTS:
        op.execute(f"ALTER TABLE annotations ADD CONSTRAINT {name} CHECK ({check}) NOT VALID")
        op.execute(
            f"""DO $$ BEGIN
                    ALTER TABLE annotations VALIDATE CONSTRAINT {name};
                EXCEPTION WHEN check_violation THEN
                    RAISE NOTICE 'annotations: older rows break {name}; they are kept, new and '
                                 'changed rows are checked';
                END $$"""
        )
    op.execute(TRIGGER)
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("speech.sql"))
    op.execute("SELECT ranger.refresh_detections(name) FROM concepts WHERE label_ids IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS annotations_integrity_row ON public.annotations")
    op.execute("DROP FUNCTION IF EXISTS public.annotations_integrity_row()")
    for name, _ in CONSTRAINTS:
        op.execute(f"ALTER TABLE annotations DROP CONSTRAINT IF EXISTS {name}")
    op.execute(read_sql("frozen/0025_downgrade.sql"))
