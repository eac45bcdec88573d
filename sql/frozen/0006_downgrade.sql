-- FROZEN: not a current definition (see sql/README.md). Used only by the downgrade of
-- migration 0006 (halfvec): the six functions as migrations 0003/0004 defined them, before
-- 0006 made them follow each space's index type. Never edit; never apply from an upgrade.

-- The ranking statement of ranger.search_vector, for a space of dimension p_dim (EXPLAIN it
-- with PREPARE: parameters $1 query vector, $2 space, $3 sensor ids, $4/$5 time of day,
-- $6/$7 local dates, $8/$9 instants, $10 excluded window, $11 k, $12 min score).
CREATE OR REPLACE FUNCTION ranger._search_vector_sql(p_dim integer, p_where text, p_method text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format(
        'WITH hits AS MATERIALIZED (
             SELECT g.id, g.recording_id, g.sensor_id, g.start_s, g.end_s, g.starts_at,
                    g.local_date, g.local_time, %3$s AS distance
               FROM segments g
              WHERE %2$s
              ORDER BY %4$s
              LIMIT $11)
         SELECT h.id, (1 - h.distance)::real, h.recording_id, r.path, s.name, s.site,
                s.quadrant, h.start_s, h.end_s, h.starts_at, h.local_date, h.local_time,
                NULL::text, %5$L::text
           FROM hits h
           JOIN recordings r ON r.id = h.recording_id
           JOIN sensors s ON s.id = h.sensor_id
          WHERE $12::real IS NULL OR 1 - h.distance >= $12
          ORDER BY h.distance, h.id',
        p_dim, p_where,
        -- exact: cosine_distance() is a function call the HNSW index cannot serve
        CASE WHEN p_method = 'hnsw'
             THEN format('g.embedding::vector(%1$s) <=> $1::vector(%1$s)', p_dim)
             ELSE format('cosine_distance(g.embedding::vector(%1$s), $1::vector(%1$s))', p_dim) END,
        CASE WHEN p_method = 'hnsw'
             THEN format('g.embedding::vector(%1$s) <=> $1::vector(%1$s)', p_dim)
             ELSE '9, g.id' END,
        p_method)
$$;

CREATE OR REPLACE FUNCTION ranger.search_vector(
    p_space integer,
    p_query vector,
    p_k integer DEFAULT 10,
    p_sensors text[] DEFAULT NULL,
    p_sites text[] DEFAULT NULL,
    p_quadrants text[] DEFAULT NULL,
    p_time_from time DEFAULT NULL,
    p_time_to time DEFAULT NULL,
    p_date_from date DEFAULT NULL,
    p_date_to date DEFAULT NULL,
    p_at_from timestamptz DEFAULT NULL,
    p_at_to timestamptz DEFAULT NULL,
    p_min_score real DEFAULT NULL,
    p_exclude bigint DEFAULT NULL,
    p_strategy text DEFAULT 'auto',
    p_exact_limit integer DEFAULT NULL,
    p_ef_search integer DEFAULT NULL
) RETURNS TABLE (
    segment_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, label text, method text
)
-- VOLATILE only because it EXPLAINs the filter to estimate its selectivity; it writes nothing.
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
-- Function-level SETs: what set_config() changes below is restored when the function returns.
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
AS $fn$
DECLARE
    v_dim integer;
    v_ids integer[];
    v_where text;
    v_passing bigint;
    v_total double precision;
    v_estimate double precision;
    v_selectivity double precision := 1;
    v_plan json;
    v_method text := p_strategy;
    v_sql text;
    v_limit integer;
BEGIN
    IF p_k IS NULL OR p_k < 1 THEN
        RAISE EXCEPTION 'k must be a positive number of results';
    END IF;
    SELECT dimension INTO v_dim FROM spaces WHERE id = p_space;
    IF v_dim IS NULL THEN
        RAISE EXCEPTION 'no space with id %', p_space;
    END IF;
    -- An exact scan costs about (rows x dimension); 4M floats (16 MB of vectors) is where the
    -- index scan becomes faster on the benchmark machine (bench/search.py, docs/benchmarks.md).
    v_limit := coalesce(p_exact_limit, greatest(1000, 4000000 / v_dim));
    IF vector_dims(p_query) <> v_dim THEN
        RAISE EXCEPTION 'query vector has % dimensions, space % has %',
            vector_dims(p_query), p_space, v_dim;
    END IF;
    v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants);
    v_where := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                  p_at_from, p_at_to, p_exclude);

    IF v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    IF v_method <> 'exact' THEN
        -- How many windows pass the filters: the planner's estimate first (cheap); when that
        -- is anywhere near the exact-scan limit, an exact count that stops at limit + 1.
        SELECT greatest(c.reltuples, 1) INTO v_total
          FROM pg_class c WHERE c.relname = 'segments_space_' || p_space;
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM segments g WHERE %s', v_where)
           INTO v_plan
          USING p_query, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                p_at_from, p_at_to, p_exclude;
        v_estimate := (v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
        IF v_estimate <= 4 * v_limit THEN
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM segments g WHERE %s LIMIT %s) s',
                           v_where, v_limit + 1)
               INTO v_passing
              USING p_query, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                    p_at_from, p_at_to, p_exclude;
            v_estimate := CASE WHEN v_passing <= v_limit THEN v_passing
                               ELSE greatest(v_estimate, v_passing) END;
        ELSE
            v_passing := v_limit + 1;  -- far above the limit: no need to count
        END IF;
        v_selectivity := least(1, v_estimate / greatest(v_total, v_estimate));
        IF v_method = 'auto' THEN
            IF v_passing <= v_limit
               OR current_setting('hnsw.max_scan_tuples')::double precision * v_selectivity
                  < 4 * p_k THEN
                v_method := 'exact';
            ELSE
                v_method := 'hnsw';
            END IF;
        END IF;
    END IF;

    IF v_method = 'hnsw' THEN
        -- ef_search is the candidate list of each step of the (iterative) index scan: at least
        -- 400 (recall@10 0.97-0.98 at 10-50 % selectivity on 1M real-like 1024-d vectors, p95
        -- under 35 ms; 100 gave 0.89-0.93) and 2k, larger as the filter gets more selective
        -- (4 / selectivity), up to 1000.
        PERFORM set_config('hnsw.ef_search', coalesce(p_ef_search,
            least(1000, greatest(400, 2 * p_k, ceil(4 / v_selectivity)))::integer)::text, true);
    END IF;
    v_sql := ranger._search_vector_sql(v_dim, v_where, v_method);
    RETURN QUERY EXECUTE v_sql
        USING p_query, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, p_exclude, p_k, p_min_score;
END
$fn$;

-- The k-nearest-neighbour distance statement behind ranger.anomaly_scores.
--   p_targets    : a SELECT over `segments g` giving id, recording_id, start_s, end_s,
--                  starts_at, local_date, local_time and the vector as `v`;
--   p_base_where : the baseline filter on `segments g`;
--   p_method     : 'hnsw' (pgvector index, iterative scan, one index scan per target) or
--                  'exact' (the baseline is read once into a MATERIALIZED CTE, then every
--                  target is compared with every baseline window).
-- A baseline window that overlaps its target in the same recording is never a neighbour.
-- Parameters: $2 space, $3 sensor ids, $4/$5 time of day, $6/$7 period dates, $8/$9 period
-- instants, $11/$12 baseline dates, $13/$14 baseline instants, $15 k, $16 sample size.
CREATE OR REPLACE FUNCTION ranger._knn_distance_sql(
    p_dim integer, p_targets text, p_base_where text, p_method text
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_method = 'hnsw' THEN format(
        'WITH t AS MATERIALIZED (%2$s)
         SELECT t.id, t.recording_id, t.start_s, t.end_s, t.starts_at, t.local_date,
                t.local_time, nn.distance, nn.n
           FROM t CROSS JOIN LATERAL (
                SELECT avg(x.d)::real AS distance, count(*) AS n FROM (
                    SELECT g.embedding::vector(%1$s) <=> t.v AS d
                      FROM segments g
                     WHERE %3$s
                       AND NOT (g.recording_id = t.recording_id
                                AND g.start_s < t.end_s AND g.end_s > t.start_s)
                     ORDER BY g.embedding::vector(%1$s) <=> t.v
                     LIMIT $15) x) nn',
        p_dim, p_targets, p_base_where)
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
                                AND b.start_s < t.end_s AND b.end_s > t.start_s)
                     ORDER BY 1
                     LIMIT $15) x) nn',
        p_dim, p_targets, p_base_where) END
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
--            rest of the baseline): the baseline's own typical neighbour distance;
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
AS $fn$
DECLARE
    v_sensor integer;
    v_space integer;
    v_dim integer;
    v_ids integer[];
    v_period text;
    v_base text;
    v_passing bigint;
    v_total double precision;
    v_method text := p_strategy;
    v_scale double precision;
    v_n bigint;
    v_sql text;
BEGIN
    IF p_k IS NULL OR p_k < 1 THEN
        RAISE EXCEPTION 'k must be a positive number of neighbours';
    END IF;
    IF v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT id INTO v_sensor FROM sensors WHERE name = p_sensor;
    IF v_sensor IS NULL THEN
        RAISE EXCEPTION 'unknown sensor %', p_sensor;
    END IF;
    SELECT id, dimension INTO v_space, v_dim FROM spaces WHERE name = p_space;
    IF v_space IS NULL THEN
        RAISE EXCEPTION 'no space named %', p_space;
    END IF;
    v_ids := ARRAY[v_sensor];

    -- sensor, space and time of day (shared by period and baseline), then the date bounds
    v_period := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                   p_at_from, p_at_to, NULL);
    v_base := ranger._filter_sql(v_ids, p_time_from, p_time_to, NULL, NULL, NULL, NULL, NULL);
    IF num_nonnulls(p_base_date_from, p_base_date_to, p_base_at_from, p_base_at_to) > 0 THEN
        v_base := concat_ws(' AND ', v_base,
            CASE WHEN p_base_date_from IS NOT NULL THEN 'g.local_date >= $11' END,
            CASE WHEN p_base_date_to IS NOT NULL THEN 'g.local_date <= $12' END,
            CASE WHEN p_base_at_from IS NOT NULL THEN 'g.starts_at >= $13' END,
            CASE WHEN p_base_at_to IS NOT NULL THEN 'g.starts_at < $14' END);
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
    IF v_method = 'auto' THEN
        -- the same reasoning as ranger.search_vector: a small or very selective baseline is
        -- ranked exactly, otherwise the HNSW index with iterative scan
        SELECT greatest(c.reltuples, 1) INTO v_total
          FROM pg_class c WHERE c.relname = 'segments_space_' || v_space;
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
        PERFORM set_config('hnsw.ef_search', least(greatest(2 * p_k, 400), 1000)::text, true);
    END IF;

    -- the baseline's own typical neighbour distance, on a fixed pseudo-random sample
    v_sql := ranger._knn_distance_sql(v_dim,
        format('SELECT g.id, g.recording_id, g.start_s, g.end_s, g.starts_at, g.local_date,
                       g.local_time, g.embedding::vector(%s) AS v
                  FROM segments g WHERE %s ORDER BY hashint8(g.id), g.id LIMIT $16',
               v_dim, v_base),
        v_base, v_method);
    EXECUTE format('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s.distance) FROM (%s) s',
                   v_sql)
       INTO v_scale
      USING NULL::vector, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
            p_at_from, p_at_to, NULL::bigint, p_base_date_from, p_base_date_to,
            p_base_at_from, p_base_at_to, p_k, greatest(p_sample, 1);
    -- a floor, so that a perfectly steady (e.g. digitally silent) baseline gives finite scores
    v_scale := greatest(coalesce(v_scale, 0), 0.001);

    v_sql := ranger._knn_distance_sql(v_dim,
        format('SELECT g.id, g.recording_id, g.start_s, g.end_s, g.starts_at, g.local_date,
                       g.local_time, g.embedding::vector(%s) AS v
                  FROM segments g WHERE %s',
               v_dim, v_period),
        v_base, v_method);
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
AS $fn$
DECLARE
    v_dim integer;
    v_total double precision;
    v_method text := p_strategy;
BEGIN
    IF p_k IS NULL OR p_k < 1 THEN
        RAISE EXCEPTION 'k must be a positive number of results';
    END IF;
    IF v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT dimension INTO v_dim FROM spaces WHERE id = p_space;
    IF v_dim IS NULL THEN
        RAISE EXCEPTION 'no space with id %', p_space;
    END IF;
    IF v_method = 'auto' THEN
        SELECT c.reltuples INTO v_total
          FROM pg_class c WHERE c.relname = 'segments_space_' || p_space;
        v_method := CASE WHEN coalesce(v_total, 0) <= p_exact_limit THEN 'exact' ELSE 'hnsw' END;
    END IF;
    IF v_method = 'hnsw' THEN
        PERFORM set_config('hnsw.ef_search', least(greatest(2 * p_k, 400), 1000)::text, true);
        RETURN QUERY EXECUTE format(
            'WITH q AS MATERIALIZED (
                 SELECT (u.o - 1)::integer AS i, u.v::vector(%1$s) AS v
                   FROM unnest($1) WITH ORDINALITY u(v, o))
             SELECT q.i, h.id, h.recording_id, h.start_s, h.end_s, (1 - h.d)::real
               FROM q CROSS JOIN LATERAL (
                    SELECT x.* FROM (
                        SELECT g.id, g.recording_id, g.start_s, g.end_s,
                               g.embedding::vector(%1$s) <=> q.v AS d
                          FROM segments g
                         WHERE g.space_id = $2 AND ($3::bigint IS NULL OR g.recording_id <> $3)
                         ORDER BY g.embedding::vector(%1$s) <=> q.v
                         LIMIT $4) x) h
              WHERE $5::real IS NULL OR 1 - h.d >= $5
              ORDER BY q.i, h.d, h.id', v_dim)
          USING p_vectors, p_space, p_exclude_recording, p_k, p_min_score;
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
AS $fn$
DECLARE
    v_dim integer;
    v_total double precision;
    v_method text := p_strategy;
    v_from text;
BEGIN
    IF p_k IS NULL OR p_k < 1 THEN
        RAISE EXCEPTION 'k must be a positive number of neighbours';
    END IF;
    IF v_method NOT IN ('auto', 'hnsw', 'exact') THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT dimension INTO v_dim FROM spaces WHERE id = p_space;
    IF v_dim IS NULL THEN
        RAISE EXCEPTION 'no space with id %', p_space;
    END IF;
    IF v_method = 'auto' THEN
        SELECT c.reltuples INTO v_total
          FROM pg_class c WHERE c.relname = 'segments_space_' || p_space;
        v_method := CASE WHEN coalesce(v_total, 0) <= p_exact_limit THEN 'exact' ELSE 'hnsw' END;
    END IF;
    IF v_method = 'hnsw' THEN
        v_from := format(
            'SELECT g.id, g.recording_id, g.start_s, g.embedding::vector(%1$s) <=> a.v AS d
               FROM segments g
              WHERE g.space_id = $1 AND g.recording_id <> a.recording_id
              ORDER BY g.embedding::vector(%1$s) <=> a.v LIMIT $2', v_dim);
    ELSE
        v_from := 'SELECT b.id, b.recording_id, b.start_s, cosine_distance(b.v, a.v) AS d
                     FROM a AS b WHERE b.recording_id <> a.recording_id
                    ORDER BY 4, 1 LIMIT $2';
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH a AS MATERIALIZED (
             SELECT g.id, g.recording_id, g.start_s, g.embedding::vector(%1$s) AS v
               FROM segments g WHERE g.space_id = $1),
              p AS (
             SELECT a.id AS ia, a.recording_id AS ra, a.start_s AS sa,
                    h.id AS ib, h.recording_id AS rb, h.start_s AS sb, (1 - h.d)::real AS score
               FROM a CROSS JOIN LATERAL (%2$s) h
              WHERE 1 - h.d >= $3)
         SELECT DISTINCT ON (least(ia, ib), greatest(ia, ib))
                CASE WHEN ra < rb THEN ia ELSE ib END, least(ra, rb),
                CASE WHEN ra < rb THEN sa ELSE sb END,
                CASE WHEN ra < rb THEN ib ELSE ia END, greatest(ra, rb),
                CASE WHEN ra < rb THEN sb ELSE sa END, score
           FROM p
          ORDER BY least(ia, ib), greatest(ia, ib), score DESC', v_dim, v_from)
      USING p_space, p_k, p_min_score;
END
$fn$;
