"""Ingestion job queue: one row per file to ingest, claimed by workers with SKIP LOCKED.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Workers on any number of machines share this table and nothing else (see
# ``soundscape.jobs``): a worker claims the first runnable job with
#   UPDATE jobs SET status = 'running', locked_by = ..., locked_until = now() + lease, ...
#   WHERE id = (SELECT id FROM jobs WHERE <runnable> ORDER BY priority DESC, id
#               FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING ...
# where <runnable> is "queued and run_after has passed" or "running but its lease expired"
# (its worker died). ``jobs_claim_idx`` is a partial index over exactly the rows that can be
# runnable, in claim order, so the claim walks a short index however many jobs are done.
# ``attempts`` is incremented by every claim and, with ``locked_by``, fences a job: a worker
# only completes a job whose (locked_by, attempts) are still its own.
SCHEMA = """
CREATE TABLE jobs (
    id            bigserial PRIMARY KEY,
    path          text NOT NULL,
    sensor        text NOT NULL,
    models        text[] NOT NULL CHECK (cardinality(models) > 0),
    window_s      double precision CHECK (window_s > 0),   -- NULL: the model's default
    hop_s         double precision CHECK (hop_s > 0),      -- NULL: the model's default
    replace       boolean NOT NULL DEFAULT false,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    priority      integer NOT NULL DEFAULT 0,               -- higher runs first
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after     timestamptz NOT NULL DEFAULT now(),       -- retry backoff
    locked_by     text,                                     -- worker identity, hostname:pid
    locked_until  timestamptz,                              -- lease; extended by the heartbeat
    heartbeat_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    last_error    text,
    result        jsonb,
    CHECK (status <> 'running' OR (locked_by IS NOT NULL AND locked_until IS NOT NULL))
);
CREATE INDEX jobs_claim_idx ON jobs (priority DESC, id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_status_idx ON jobs (status, id);
CREATE INDEX jobs_path_idx ON jobs (path);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS jobs CASCADE")
