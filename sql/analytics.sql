-- The analytics family of the `ranger` schema (current definitions; see sql/README.md):
-- anomaly scores (what does not sound like a sensor's normal sound) and the window-level
-- neighbour searches behind near-duplicate detection. Applied by migrations 0004, 0006, 0007,
-- 0010, 0018, 0020 and 0021.
-- Same conventions as search.sql (whose helpers _filter_sql, _hnsw_distance_sql and
-- _space_rows these functions use): every user value is a bound parameter (USING); only
-- integers (dimension, space id) are formatted into statements; functions are SECURITY DEFINER
-- with a fixed search_path so the read-only role can run them without reading the tables.

-- The k-nearest-neighbour distance statements behind ranger.anomaly_scores.
--   p_targets    : a SELECT over `segments g` giving id, recording_id, start_s, end_s,
--                  starts_at, local_date, local_time and the vector as `v`;
--   p_base_where : the baseline filter on `segments g`;
--   p_method     : 'hnsw' (pgvector index, iterative scan, one index scan per target),
--                  'each' (the same index scans, one statement per target run by
--                  ranger._knn_each: what a Citus coordinator runs, since Citus cannot push
--                  a LATERAL ... ORDER BY ... LIMIT down to the shards) or
--                  'exact' (the baseline is read once into a MATERIALIZED CTE, then every
--                  target is compared with every baseline window).
--   p_index      : the space's index key (ranger._index_key: vector, halfvec, bit:<space> or
--                  pca:<space>); distances are exact float32 (a compact index's order only picks
--                  ranger._hnsw_candidates_sql candidates, re-ranked by the float32 distance).
-- A baseline window that overlaps its target in the same recording is never a neighbour;
-- with p_skip_twins neither is an exact twin (cosine distance below 0.0001: the same audio
-- again, e.g. a loop; decoding leaves twins about 0.00004 apart).
-- Parameters: $2 space, $3 sensor ids, $4/$5 time of day, $6/$7 period dates, $8/$9 period
-- instants, $11/$12 baseline dates, $13/$14 baseline instants, $15 k, $16 sample size.

-- The mean distance (and count) of one target's k nearest baseline windows by the index: the
-- target's vector, recording, start and end are the SQL expressions p_vec, p_rec, p_start,
-- p_end (columns of a LATERAL outer row, or parameters).
CREATE OR REPLACE FUNCTION ranger._knn_one_sql(
    p_dim integer, p_base_where text, p_index text, p_skip_twins boolean,
    p_vec text, p_rec text, p_start text, p_end text
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format(
        'SELECT avg(x.d)::real AS distance, count(*) AS n FROM (%5$s
             SELECT g.embedding::vector(%1$s) <=> %8$s AS d
               FROM segments g
              WHERE %2$s
                AND NOT (g.recording_id = %9$s
                         AND g.start_s < %11$s AND g.end_s > %10$s)%4$s
              ORDER BY %3$s
              LIMIT %6$s%7$s) x',
        p_dim, p_base_where, ranger._hnsw_distance_sql(p_dim, p_index, p_vec),
        CASE WHEN p_skip_twins THEN format(
            ' AND (g.embedding::vector(%s) <=> %s) >= 0.0001', p_dim, p_vec) ELSE '' END,
        -- a compact index: the k nearest of its candidates by the exact distance
        CASE WHEN ranger._compact(p_index) THEN 'SELECT c.d FROM (' ELSE '' END,
        ranger._hnsw_candidates_sql(p_index, '$15'),
        CASE WHEN ranger._compact(p_index) THEN ') c ORDER BY c.d LIMIT $15' ELSE '' END,
        p_vec, p_rec, p_start, p_end)
$$;

CREATE OR REPLACE FUNCTION ranger._knn_sql(
    p_dim integer, p_targets text, p_base_where text, p_method text, p_index text,
    p_skip_twins boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_method = 'hnsw' THEN format(
        'WITH t AS MATERIALIZED (%1$s)
         SELECT t.id, t.recording_id, t.start_s, t.end_s, t.starts_at, t.local_date,
                t.local_time, nn.distance, nn.n
           FROM t CROSS JOIN LATERAL (%2$s) nn',
        p_targets,
        ranger._knn_one_sql(p_dim, p_base_where, p_index, p_skip_twins,
                            't.v', 't.recording_id', 't.start_s', 't.end_s'))
    WHEN p_method = 'each' THEN format(
        'SELECT * FROM ranger._knn_each(%L, %L, $2, $3, $4, $5, $6, $7, $8, $9, $11, $12, $13,
                                        $14, $15, $16)',
        p_targets,
        ranger._knn_one_sql(p_dim, p_base_where, p_index, p_skip_twins,
                            '$1', '$17', '$18', '$19'))
    ELSE format(
        'WITH t AS MATERIALIZED (%2$s),
              base AS MATERIALIZED (
                SELECT g.recording_id, g.start_s, g.end_s, g.embedding::vector(%1$s) AS v
                  FROM segments g WHERE %3$s)
         SELECT t.id, t.recording_id, t.start_s, t.end_s, t.starts_at, t.local_date,
                t.local_time, nn.distance, nn.n
           FROM t CROSS JOIN LATERAL (
                SELECT avg(x.d)::real AS distance, count(*) AS n FROM (
                    SELECT cosine_distance(b.v, t.v) AS d
                      FROM base b
                     WHERE NOT (b.recording_id = t.recording_id
                                AND b.start_s < t.end_s AND b.end_s > t.start_s)%4$s
                     ORDER BY 1
                     LIMIT $15) x) nn',
        p_dim, p_targets, p_base_where,
        CASE WHEN p_skip_twins THEN ' AND cosine_distance(b.v, t.v) >= 0.0001' ELSE '' END) END
$$;

-- The 'each' method of ranger._knn_sql: runs p_targets (parameters as in _knn_sql), then for
-- every target the one-target statement p_one ($1 the target's vector, $17/$18/$19 its
-- recording, start and end, the rest as in _knn_sql): one distributed top-k per target, which
-- Citus runs on every shard and merges. Internal (it executes the statements it is given):
-- SECURITY INVOKER and not PUBLIC's; ranger.anomaly_scores calls it as the owner.
CREATE OR REPLACE FUNCTION ranger._knn_each(
    p_targets text, p_one text, p_space integer, p_ids integer[], p_time_from time,
    p_time_to time, p_date_from date, p_date_to date, p_at_from timestamptz,
    p_at_to timestamptz, p_base_date_from date, p_base_date_to date,
    p_base_at_from timestamptz, p_base_at_to timestamptz, p_k integer, p_sample integer
) RETURNS TABLE (
    id bigint, recording_id bigint, start_s real, end_s real, starts_at timestamptz,
    local_date date, local_time time, distance real, n bigint
)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $fn$
DECLARE
    t record;
BEGIN
    FOR t IN EXECUTE p_targets
        USING NULL::vector, p_space, p_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
              p_base_at_from, p_base_at_to, p_k, p_sample
    LOOP
        EXECUTE p_one INTO distance, n
            USING t.v, p_space, p_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                  p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
                  p_base_at_from, p_base_at_to, p_k, p_sample, t.recording_id, t.start_s,
                  t.end_s;
        id := t.id; recording_id := t.recording_id; start_s := t.start_s; end_s := t.end_s;
        starts_at := t.starts_at; local_date := t.local_date; local_time := t.local_time;
        RETURN NEXT;
    END LOOP;
END
$fn$;
REVOKE EXECUTE ON FUNCTION ranger._knn_each(text, text, integer, integer[], time, time, date,
    date, timestamptz, timestamptz, date, date, timestamptz, timestamptz, integer, integer)
    FROM PUBLIC;

-- The k-nearest-neighbour distance statement behind ranger.anomaly_scores (twins count).
CREATE OR REPLACE FUNCTION ranger._knn_distance_sql(
    p_dim integer, p_targets text, p_base_where text, p_method text, p_index text
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT ranger._knn_sql(p_dim, p_targets, p_base_where, p_method, p_index, false)
$$;

-- Anomaly scores of one sensor's windows in a period, against the same sensor's baseline.
--
-- Period: local dates p_date_from..p_date_to (inclusive) and/or instants p_at_from..p_at_to
-- (half-open), optionally only the local times of day p_time_from..p_time_to (may cross
-- midnight). Baseline: the same sensor, space and times of day, between the p_base_* bounds;
-- when no p_base_* bound is given, every window of the sensor before the period's start. When
-- no period bound is given, the period is everything after the baseline's end.
--
-- distance = mean cosine distance of a window to its k nearest baseline windows;
-- scale    = the median of the same quantity for a sample of baseline windows (against the
--            rest of the baseline, not counting exact twins: repeated audio): the baseline's
--            own typical neighbour distance, at least 0.001; a NOTICE says when twins were
--            left out (DETAIL: the scale with them);
-- score    = distance / scale: about 1 for a window as ordinary as the baseline's own
--            windows, 2 = twice as far from anything normal, >= 3 clearly unusual.
CREATE OR REPLACE FUNCTION ranger.anomaly_scores(
    p_sensor text,
    p_space text,
    p_k integer DEFAULT 10,
    p_date_from date DEFAULT NULL,
    p_date_to date DEFAULT NULL,
    p_at_from timestamptz DEFAULT NULL,
    p_at_to timestamptz DEFAULT NULL,
    p_time_from time DEFAULT NULL,
    p_time_to time DEFAULT NULL,
    p_base_date_from date DEFAULT NULL,
    p_base_date_to date DEFAULT NULL,
    p_base_at_from timestamptz DEFAULT NULL,
    p_base_at_to timestamptz DEFAULT NULL,
    p_strategy text DEFAULT 'auto',
    p_sample integer DEFAULT 200,
    p_exact_limit integer DEFAULT 20000
) RETURNS TABLE (
    segment_id bigint, recording_id bigint, start_s real, end_s real, starts_at timestamptz,
    local_date date, local_time time, distance real, score real, scale real,
    baseline_windows bigint, method text
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
SET jit = off  -- as ranger.search_vector (search.sql): JIT costs far more than HNSW scans
AS $fn$
DECLARE
    v_guard text;
    v_guard_ef integer;
    v_sensor integer;
    v_space integer;
    v_dim integer;
    v_index text;
    v_ids integer[];
    v_period text;
    v_base text;
    v_passing bigint;
    v_total double precision;
    v_method text := p_strategy;
    v_knn text;
    v_scale double precision;
    v_raw double precision;
    v_sample text;
    v_n bigint;
    v_sql text;
BEGIN
    PERFORM ranger._check_int('p_k (the number of neighbours)', p_k, 1, 10000);
    PERFORM ranger._check_int('p_exact_limit', p_exact_limit, 0, 100000000);
    IF v_method IS NULL OR v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT id INTO v_sensor FROM sensors WHERE name = p_sensor;
    IF v_sensor IS NULL THEN
        RAISE EXCEPTION 'unknown sensor %', p_sensor;
    END IF;
    SELECT id, dimension, ranger._index_key(id, index_type) INTO v_space, v_dim, v_index
      FROM spaces WHERE name = p_space;
    IF v_space IS NULL THEN
        RAISE EXCEPTION 'no space named %', p_space;
    END IF;
    v_ids := ARRAY[v_sensor];

    -- sensor, space and time of day (shared by period and baseline), then the date bounds
    v_period := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                   p_at_from, p_at_to, NULL);
    v_base := ranger._filter_sql(v_ids, p_time_from, p_time_to, NULL, NULL, NULL, NULL, NULL);
    IF num_nonnulls(p_base_date_from, p_base_date_to, p_base_at_from, p_base_at_to) > 0 THEN
        -- the baseline's own dates and instants, by the rule of every period
        v_base := v_base || ' AND ranger.in_time_filter(g.local_time, g.local_date, '
                            'g.starts_at, NULL, NULL, $11, $12, $13, $14)';
    ELSIF num_nonnulls(p_date_from, p_at_from) > 0 THEN
        -- the default baseline: everything before the period
        v_base := concat_ws(' AND ', v_base,
            CASE WHEN p_date_from IS NOT NULL THEN 'g.local_date < $6' END,
            CASE WHEN p_at_from IS NOT NULL THEN 'g.starts_at < $8' END);
    ELSE
        RAISE EXCEPTION 'give the start of the period (date_from or at_from) or bounds for the baseline';
    END IF;
    IF num_nonnulls(p_date_from, p_date_to, p_at_from, p_at_to) = 0 THEN
        -- the default period: everything after the baseline
        IF num_nonnulls(p_base_date_to, p_base_at_to) = 0 THEN
            RAISE EXCEPTION 'give the period (date_from/at_from) or the end of the baseline';
        END IF;
        v_period := concat_ws(' AND ', v_period,
            CASE WHEN p_base_date_to IS NOT NULL THEN 'g.local_date > $12' END,
            CASE WHEN p_base_at_to IS NOT NULL THEN 'g.starts_at >= $14' END);
    END IF;

    EXECUTE format('SELECT count(*) FROM segments g WHERE %s', v_base)
       INTO v_n
      USING NULL::vector, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
            p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
            p_base_at_from, p_base_at_to;
    IF v_n <= p_k THEN
        RAISE EXCEPTION 'the baseline has % window(s) of sensor % in space %; it needs more than k = %',
            v_n, p_sensor, p_space, p_k;
    END IF;
    -- the space's recall guard (ranger.index_recall), as in ranger.search_vector
    SELECT c.guard, c.guard_ef INTO v_guard, v_guard_ef FROM ranger.index_recall(v_space) c;
    IF v_method = 'auto' AND v_guard = 'exact' THEN
        v_method := 'exact';
    END IF;
    IF v_method = 'auto' THEN
        -- the same reasoning as ranger.search_vector: a small or very selective baseline is
        -- ranked exactly, otherwise the HNSW index with iterative scan
        v_total := greatest(ranger._space_rows(v_space), 1);
        v_passing := least(v_n, p_exact_limit + 1);
        IF v_passing <= p_exact_limit
           OR current_setting('hnsw.max_scan_tuples')::double precision
              * v_n / greatest(v_total, v_n) < 4 * p_k THEN
            v_method := 'exact';
        ELSE
            v_method := 'hnsw';
        END IF;
    END IF;
    IF v_method = 'hnsw' THEN
        PERFORM set_config('hnsw.ef_search', least(greatest(2 * p_k, 400, v_guard_ef), 1000)::text, true);
    END IF;
    -- on a Citus coordinator the index scans run one statement per target (see _knn_sql)
    v_knn := CASE WHEN v_method = 'hnsw' AND ranger._segments_distributed() THEN 'each'
                  ELSE v_method END;

    -- the baseline's own typical neighbour distance, on a fixed pseudo-random sample, not
    -- counting exact twins (see ranger._knn_sql): in a baseline of repeated audio (a loop,
    -- the same sound stored again) most windows have twins, and with them the scale collapsed
    -- (0.0022 was seen, and the same audio a second later then scored 21)
    v_sample := format('SELECT g.id, g.recording_id, g.start_s, g.end_s, g.starts_at,
                               g.local_date, g.local_time, g.embedding::vector(%s) AS v
                          FROM segments g WHERE %s ORDER BY hashint8(g.id), g.id LIMIT $16',
                       v_dim, v_base);
    EXECUTE format('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s.distance) FROM (%s) s',
                   ranger._knn_sql(v_dim, v_sample, v_base, v_knn, v_index, true))
       INTO v_scale
      USING NULL::vector, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
            p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
            p_base_at_from, p_base_at_to, p_k, greatest(p_sample, 1);
    -- and with twins, to say when they made a difference
    EXECUTE format('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s.distance) FROM (%s) s',
                   ranger._knn_distance_sql(v_dim, v_sample, v_base, v_knn, v_index))
       INTO v_raw
      USING NULL::vector, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
            p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
            p_base_at_from, p_base_at_to, p_k, greatest(p_sample, 1);
    IF v_scale > 2 * coalesce(v_raw, 0) THEN
        RAISE NOTICE USING
            MESSAGE = format('anomaly scale %s leaves out exact twins (repeated audio in the '
                             'baseline): with them it would be %s',
                             round(v_scale::numeric, 4), round(coalesce(v_raw, 0)::numeric, 4)),
            DETAIL = coalesce(v_raw, 0)::text;
    END IF;
    -- a floor, so that a perfectly steady (e.g. digitally silent) baseline gives finite scores
    v_scale := greatest(coalesce(v_scale, 0), 0.001);

    v_sql := ranger._knn_distance_sql(v_dim,
        format('SELECT g.id, g.recording_id, g.start_s, g.end_s, g.starts_at, g.local_date,
                       g.local_time, g.embedding::vector(%s) AS v
                  FROM segments g WHERE %s',
               v_dim, v_period),
        v_base, v_knn, v_index);
    RETURN QUERY EXECUTE format(
        'SELECT s.id, s.recording_id, s.start_s, s.end_s, s.starts_at, s.local_date,
                s.local_time, s.distance, (s.distance / $17)::real, $17::real, $18::bigint,
                $19::text
           FROM (%s) s
          WHERE s.distance IS NOT NULL
          ORDER BY s.distance DESC, s.id', v_sql)
      USING NULL::vector, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
            p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
            p_base_at_from, p_base_at_to, p_k, p_sample, v_scale, v_n, v_method;
END
$fn$;

-- For each of a list of query vectors (e.g. the windows of an audio example), its k nearest
-- windows in a space (optionally not from one recording, and at least p_min_score cosine
-- similarity). The building block of `soundscape duplicates --audio/--recording`.
CREATE OR REPLACE FUNCTION ranger.similar_windows(
    p_space integer,
    p_vectors vector[],
    p_k integer DEFAULT 10,
    p_min_score real DEFAULT NULL,
    p_exclude_recording bigint DEFAULT NULL,
    p_strategy text DEFAULT 'auto',
    p_exact_limit integer DEFAULT 20000
) RETURNS TABLE (
    query_index integer, segment_id bigint, recording_id bigint, start_s real, end_s real,
    score real
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
SET jit = off  -- as ranger.search_vector (search.sql): JIT costs far more than HNSW scans
AS $fn$
DECLARE
    v_guard text;
    v_guard_ef integer;
    v_dim integer;
    v_index text;
    v_total double precision;
    v_method text := p_strategy;
    v_i integer := 0;
    v_vector vector;
    v_one text;
BEGIN
    PERFORM ranger._check_int('p_k (the number of results)', p_k, 1, 10000);
    PERFORM ranger._check_int('p_exact_limit', p_exact_limit, 0, 100000000);
    FOREACH v_vector IN ARRAY coalesce(p_vectors, '{}') LOOP
        v_i := v_i + 1;
        PERFORM ranger._check_query(format('p_vectors[%s]', v_i), v_vector);
    END LOOP;
    IF v_method IS NULL OR v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT dimension, ranger._index_key(id, index_type) INTO v_dim, v_index
      FROM spaces WHERE id = p_space;
    IF v_dim IS NULL THEN
        RAISE EXCEPTION 'no space with id %', p_space;
    END IF;
    -- the space's recall guard (ranger.index_recall), as in ranger.search_vector
    SELECT c.guard, c.guard_ef INTO v_guard, v_guard_ef FROM ranger.index_recall(p_space) c;
    IF v_method = 'auto' AND v_guard = 'exact' THEN
        v_method := 'exact';
    END IF;
    IF v_method = 'auto' THEN
        v_total := ranger._space_rows(p_space);
        v_method := CASE WHEN coalesce(v_total, 0) <= p_exact_limit THEN 'exact' ELSE 'hnsw' END;
    END IF;
    IF v_method = 'hnsw' THEN
        PERFORM set_config('hnsw.ef_search', least(greatest(2 * p_k, 400, v_guard_ef), 1000)::text, true);
        -- the k nearest of one query vector (the SQL expression %5$s) by the index
        v_one := format(
            'SELECT x.* FROM (
                 SELECT g.id, g.recording_id, g.start_s, g.end_s,
                        g.embedding::vector(%1$s) <=> %5$s AS d
                   FROM segments g
                  WHERE g.space_id = $2 AND ($3::bigint IS NULL OR g.recording_id <> $3)
                  ORDER BY %2$s
                  LIMIT %3$s) x%4$s', v_dim, '%1$s', ranger._hnsw_candidates_sql(v_index, '$4'),
            -- a compact index: the k nearest of its candidates by the exact distance
            CASE WHEN ranger._compact(v_index) THEN ' ORDER BY x.d, x.id LIMIT $4' ELSE '' END,
            '%2$s');
        IF NOT ranger._segments_distributed() THEN
            RETURN QUERY EXECUTE format(
                'WITH q AS MATERIALIZED (
                     SELECT (u.o - 1)::integer AS i, u.v::vector(%1$s) AS v
                       FROM unnest($1) WITH ORDINALITY u(v, o))
                 SELECT q.i, h.id, h.recording_id, h.start_s, h.end_s, (1 - h.d)::real
                   FROM q CROSS JOIN LATERAL (%2$s) h
                  WHERE $5::real IS NULL OR 1 - h.d >= $5
                  ORDER BY q.i, h.d, h.id', v_dim,
                format(v_one, ranger._hnsw_distance_sql(v_dim, v_index, 'q.v'), 'q.v'))
              USING p_vectors, p_space, p_exclude_recording, p_k, p_min_score;
        ELSE
            -- a Citus coordinator: one statement per query vector ($6), which Citus runs on
            -- every shard and merges (it cannot push the LATERAL form down)
            v_i := 0;
            FOREACH v_vector IN ARRAY coalesce(p_vectors, '{}') LOOP
                RETURN QUERY EXECUTE format(
                    'SELECT $7, h.id, h.recording_id, h.start_s, h.end_s, (1 - h.d)::real
                       FROM (%s) h
                      WHERE $5::real IS NULL OR 1 - h.d >= $5
                      ORDER BY h.d, h.id',
                    format(v_one, ranger._hnsw_distance_sql(v_dim, v_index, '$6'),
                           format('$6::vector(%s)', v_dim)))
                  USING p_vectors, p_space, p_exclude_recording, p_k, p_min_score,
                        v_vector::vector, v_i;
                v_i := v_i + 1;
            END LOOP;
        END IF;
    ELSE
        RETURN QUERY EXECUTE format(
            'WITH q AS MATERIALIZED (
                 SELECT (u.o - 1)::integer AS i, u.v::vector(%1$s) AS v
                   FROM unnest($1) WITH ORDINALITY u(v, o)),
                  base AS MATERIALIZED (
                 SELECT g.id, g.recording_id, g.start_s, g.end_s, g.embedding::vector(%1$s) AS v
                   FROM segments g
                  WHERE g.space_id = $2 AND ($3::bigint IS NULL OR g.recording_id <> $3))
             SELECT q.i, h.id, h.recording_id, h.start_s, h.end_s, (1 - h.d)::real
               FROM q CROSS JOIN LATERAL (
                    SELECT b.id, b.recording_id, b.start_s, b.end_s,
                           cosine_distance(b.v, q.v) AS d
                      FROM base b ORDER BY 5, 1 LIMIT $4) h
              WHERE $5::real IS NULL OR 1 - h.d >= $5
              ORDER BY q.i, h.d, h.id', v_dim)
          USING p_vectors, p_space, p_exclude_recording, p_k, p_min_score;
    END IF;
END
$fn$;

-- Every pair of windows from different recordings of a space that are among each other's k
-- nearest neighbours with at least p_min_score cosine similarity, each pair once (recording_a
-- < recording_b). The building block of `soundscape duplicates --all`. Exact below
-- p_exact_limit windows in the space (n^2 comparisons), else one HNSW scan per window.
CREATE OR REPLACE FUNCTION ranger.duplicate_pairs(
    p_space integer,
    p_k integer DEFAULT 3,
    p_min_score real DEFAULT 0.8,
    p_strategy text DEFAULT 'auto',
    p_exact_limit integer DEFAULT 2000
) RETURNS TABLE (
    segment_a bigint, recording_a bigint, start_a real, segment_b bigint, recording_b bigint,
    start_b real, score real
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
SET jit = off  -- as ranger.search_vector (search.sql): JIT costs far more than HNSW scans
AS $fn$
DECLARE
    v_guard text;
    v_guard_ef integer;
    v_dim integer;
    v_index text;
    v_total double precision;
    v_method text := p_strategy;
    v_from text;
    v_one text;
    v_pairs text;
    v_a record;
    v_h record;
    v_ia bigint[] := '{}';
    v_ra bigint[] := '{}';
    v_sa real[] := '{}';
    v_ib bigint[] := '{}';
    v_rb bigint[] := '{}';
    v_sb real[] := '{}';
    v_score real[] := '{}';
BEGIN
    PERFORM ranger._check_int('p_k (the number of neighbours)', p_k, 1, 10000);
    PERFORM ranger._check_int('p_exact_limit', p_exact_limit, 0, 100000000);
    IF v_method IS NULL OR v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT dimension, ranger._index_key(id, index_type) INTO v_dim, v_index
      FROM spaces WHERE id = p_space;
    IF v_dim IS NULL THEN
        RAISE EXCEPTION 'no space with id %', p_space;
    END IF;
    -- the space's recall guard (ranger.index_recall), as in ranger.search_vector
    SELECT c.guard, c.guard_ef INTO v_guard, v_guard_ef FROM ranger.index_recall(p_space) c;
    IF v_method = 'auto' AND v_guard = 'exact' THEN
        v_method := 'exact';
    END IF;
    IF v_method = 'auto' THEN
        v_total := ranger._space_rows(p_space);
        v_method := CASE WHEN coalesce(v_total, 0) <= p_exact_limit THEN 'exact' ELSE 'hnsw' END;
    END IF;
    IF v_method = 'hnsw' THEN
        PERFORM set_config('hnsw.ef_search', least(greatest(100, v_guard_ef), 1000)::text, true);
        -- the k nearest windows of window a (its vector and recording: the SQL expressions
        -- %1$s and %2$s) by the index
        v_from := format(
            'SELECT g.id, g.recording_id, g.start_s, g.embedding::vector(%1$s) <=> %4$s AS d
               FROM segments g
              WHERE g.space_id = $1 AND g.recording_id <> %5$s
              ORDER BY %2$s LIMIT %3$s', v_dim, '%3$s',
            ranger._hnsw_candidates_sql(v_index, '$2'), '%1$s', '%2$s');
        IF ranger._compact(v_index) THEN
            -- a compact index: the k nearest of its candidates by the exact distance
            v_from := format('SELECT c.* FROM (%s) c ORDER BY c.d, c.id LIMIT $2', v_from);
        END IF;
        IF ranger._segments_distributed() THEN
            -- a Citus coordinator: one statement per window ($4 its vector, $5 its
            -- recording), which Citus runs on every shard and merges (it cannot push the
            -- LATERAL form down); the pairs are collected, then kept once as below
            v_one := format(v_from, '$4', '$5',
                            ranger._hnsw_distance_sql(v_dim, v_index, '$4'));
            FOR v_a IN EXECUTE format(
                    'SELECT g.id, g.recording_id, g.start_s, g.embedding::vector(%s) AS v
                       FROM segments g WHERE g.space_id = $1', v_dim)
                USING p_space
            LOOP
                FOR v_h IN EXECUTE format('SELECT h.* FROM (%s) h WHERE 1 - h.d >= $3', v_one)
                    USING p_space, p_k, p_min_score, v_a.v, v_a.recording_id
                LOOP
                    v_ia := v_ia || v_a.id; v_ra := v_ra || v_a.recording_id;
                    v_sa := v_sa || v_a.start_s; v_ib := v_ib || v_h.id;
                    v_rb := v_rb || v_h.recording_id; v_sb := v_sb || v_h.start_s;
                    v_score := v_score || (1 - v_h.d)::real;
                END LOOP;
            END LOOP;
            v_pairs := 'SELECT * FROM unnest($4::bigint[], $5::bigint[], $6::real[],
                                             $7::bigint[], $8::bigint[], $9::real[], $10::real[])
                                   AS p(ia, ra, sa, ib, rb, sb, score)';
        ELSE
            v_from := format(v_from, 'a.v', 'a.recording_id',
                             ranger._hnsw_distance_sql(v_dim, v_index, 'a.v'));
        END IF;
    ELSE
        v_from := 'SELECT b.id, b.recording_id, b.start_s, cosine_distance(b.v, a.v) AS d
                     FROM a AS b WHERE b.recording_id <> a.recording_id
                    ORDER BY 4, 1 LIMIT $2';
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH p AS (%s)
         SELECT DISTINCT ON (least(ia, ib), greatest(ia, ib))
                CASE WHEN ra < rb THEN ia ELSE ib END, least(ra, rb),
                CASE WHEN ra < rb THEN sa ELSE sb END,
                CASE WHEN ra < rb THEN ib ELSE ia END, greatest(ra, rb),
                CASE WHEN ra < rb THEN sb ELSE sa END, score
           FROM p
          ORDER BY least(ia, ib), greatest(ia, ib), score DESC',
        coalesce(v_pairs, format(
            'WITH a AS MATERIALIZED (
                 SELECT g.id, g.recording_id, g.start_s, g.embedding::vector(%1$s) AS v
                   FROM segments g WHERE g.space_id = $1)
             SELECT a.id AS ia, a.recording_id AS ra, a.start_s AS sa,
                    h.id AS ib, h.recording_id AS rb, h.start_s AS sb, (1 - h.d)::real AS score
               FROM a CROSS JOIN LATERAL (%2$s) h
              WHERE 1 - h.d >= $3', v_dim, v_from)))
      USING p_space, p_k, p_min_score, v_ia, v_ra, v_sa, v_ib, v_rb, v_sb, v_score;
END
$fn$;

-- Stored anomaly runs and every scored window, with place and local time.
CREATE OR REPLACE VIEW ranger.anomaly_runs AS
SELECT ar.id AS run, s.name AS sensor, s.site, s.quadrant, sp.name AS space, ar.k,
       ar.params, ar.baseline_windows, ar.scale, ar.method, ar.n_windows, ar.max_score,
       ar.created_at
  FROM anomaly_runs ar
  JOIN sensors s ON s.id = ar.sensor_id
  JOIN spaces sp ON sp.id = ar.space_id;

CREATE OR REPLACE VIEW ranger.anomalies AS
SELECT a.run_id        AS run,
       a.rank,
       a.score,
       a.distance,
       s.name          AS sensor,
       s.site,
       s.quadrant,
       sp.name         AS space,
       g.local_date,
       g.local_time,
       g.starts_at,
       r.path,
       g.start_s,
       g.end_s,
       a.segment_id,
       g.recording_id
  FROM anomaly_scores a
  JOIN segments g ON g.space_id = a.space_id AND g.id = a.segment_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id
  JOIN spaces sp ON sp.id = a.space_id;
