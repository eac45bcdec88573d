-- Frozen (never edited, never applied by an upgrade; see sql/README.md): what migration
-- 0027's downgrade restores. ranger._filter_sql (search.sql), ranger._speech_filtered
-- (speech.sql) and ranger.anomaly_scores (analytics.sql) as they were before 0027 made them
-- call ranger.in_time_filter, each restating the time-of-day rule.

CREATE OR REPLACE FUNCTION ranger._filter_sql(
    p_sensor_ids integer[], p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz, p_exclude bigint
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    -- Positional parameters: $2 space, $3 sensor ids, $4 time_from, $5 time_to, $6 date_from,
    -- $7 date_to, $8 at_from, $9 at_to, $10 exclude.
    SELECT concat_ws(' AND ',
        'g.space_id = $2',
        CASE WHEN p_sensor_ids IS NOT NULL THEN 'g.sensor_id = ANY($3)' END,
        CASE WHEN p_time_from IS NOT NULL AND p_time_to IS NOT NULL THEN
            CASE WHEN p_time_from <= p_time_to
                 THEN 'g.local_time >= $4 AND g.local_time < $5'
                 ELSE '(g.local_time >= $4 OR g.local_time < $5)' END   -- crosses midnight
             WHEN p_time_from IS NOT NULL THEN 'g.local_time >= $4'
             WHEN p_time_to IS NOT NULL THEN 'g.local_time < $5' END,
        CASE WHEN p_date_from IS NOT NULL THEN 'g.local_date >= $6' END,
        CASE WHEN p_date_to IS NOT NULL THEN 'g.local_date <= $7' END,
        CASE WHEN p_at_from IS NOT NULL THEN 'g.starts_at >= $8' END,
        CASE WHEN p_at_to IS NOT NULL THEN 'g.starts_at < $9' END,
        CASE WHEN p_exclude IS NOT NULL THEN 'g.id <> $10' END)
$$;

CREATE OR REPLACE FUNCTION ranger._speech_filtered(
    p_ids integer[], p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz
) RETURNS SETOF public.utterances
LANGUAGE sql STABLE AS $$
    SELECT u.* FROM public.utterances u
     WHERE (p_ids IS NULL OR u.sensor_id = ANY (p_ids))
       AND CASE WHEN p_time_from IS NOT NULL AND p_time_to IS NOT NULL THEN
                CASE WHEN p_time_from <= p_time_to
                     THEN u.local_time >= p_time_from AND u.local_time < p_time_to
                     ELSE u.local_time >= p_time_from OR u.local_time < p_time_to END
                WHEN p_time_from IS NOT NULL THEN u.local_time >= p_time_from
                WHEN p_time_to IS NOT NULL THEN u.local_time < p_time_to
                ELSE true END
       AND (p_date_from IS NULL OR u.local_date >= p_date_from)
       AND (p_date_to IS NULL OR u.local_date <= p_date_to)
       AND (p_at_from IS NULL OR u.starts_at >= p_at_from)
       AND (p_at_to IS NULL OR u.starts_at < p_at_to)
$$;

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
