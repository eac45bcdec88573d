-- Frozen (sql/README.md): what migration 0036's downgrade restores, the bodies of before 0036
-- gave the filters the sun (ranger._filter_sql's p_place, its callers passing it, ranger._sensor_ids
-- accepting the key "sun", ranger.windows' minutes from sunrise/sunset). Never edited.

CREATE OR REPLACE FUNCTION ranger._filter_sql(
    p_sensor_ids integer[], p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz, p_exclude bigint
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(' AND ',
        'g.space_id = $2',
        CASE WHEN p_sensor_ids IS NOT NULL THEN 'g.sensor_id = ANY($3)' END,
        -- a bound given here as NULL is NULL in the call, whatever the caller passes as its
        -- parameter (ranger.anomaly_scores' baseline leaves the period's dates out)
        CASE WHEN num_nonnulls(p_time_from, p_time_to, p_date_from, p_date_to, p_at_from,
                               p_at_to) > 0
             THEN format('ranger.in_time_filter(g.local_time, g.local_date, g.starts_at, '
                         '%s, %s, %s, %s, %s, %s)',
                         CASE WHEN p_time_from IS NULL THEN 'NULL' ELSE '$4' END,
                         CASE WHEN p_time_to IS NULL THEN 'NULL' ELSE '$5' END,
                         CASE WHEN p_date_from IS NULL THEN 'NULL' ELSE '$6' END,
                         CASE WHEN p_date_to IS NULL THEN 'NULL' ELSE '$7' END,
                         CASE WHEN p_at_from IS NULL THEN 'NULL' ELSE '$8' END,
                         CASE WHEN p_at_to IS NULL THEN 'NULL' ELSE '$9' END) END,
        CASE WHEN p_exclude IS NOT NULL THEN 'g.id <> $10' END)
$$;

CREATE OR REPLACE FUNCTION ranger._sensor_ids(
    p_sensors text[] DEFAULT NULL, p_sites text[] DEFAULT NULL, p_quadrants text[] DEFAULT NULL,
    p_place jsonb DEFAULT NULL
) RETURNS integer[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    v_place jsonb := jsonb_strip_nulls(jsonb_build_object(
        'sensors', to_jsonb(p_sensors), 'sites', to_jsonb(p_sites),
        'quadrants', to_jsonb(p_quadrants)));
    v_keys text[];
    v_unknown text;
    v_twice text;
    v_bad text;
    v_ids integer[];
BEGIN
    IF p_place IS NOT NULL THEN
        IF jsonb_typeof(p_place) <> 'object' THEN
            RAISE EXCEPTION 'p_place must be a JSON object of lists, e.g. {"sites": ["Forest"]}, '
                'not %', p_place USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_keys := ARRAY(SELECT jsonb_object_keys(ranger._place_of(NULL::sensors)) ORDER BY 1);
        SELECT string_agg(f.key, ', ' ORDER BY f.key) FILTER (WHERE f.key <> ALL (v_keys)),
               string_agg(f.key, ', ' ORDER BY f.key) FILTER (WHERE v_place ? f.key),
               string_agg(f.key, ', ' ORDER BY f.key) FILTER (
                   WHERE jsonb_typeof(f.value) <> 'array'
                      OR jsonb_path_exists(f.value, '$[*] ? (@.type() != "string")'))
          INTO v_unknown, v_twice, v_bad
          FROM jsonb_each(jsonb_strip_nulls(p_place)) f;
        IF v_unknown IS NOT NULL THEN
            RAISE EXCEPTION 'p_place has no place filter %; the place filters are %', v_unknown,
                array_to_string(v_keys, ', ') USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_twice IS NOT NULL THEN
            RAISE EXCEPTION 'the place filter % is given twice, as an argument and in p_place: '
                'give it once', v_twice USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_bad IS NOT NULL THEN
            RAISE EXCEPTION 'p_place: % must be a list of names (a JSON array of strings), e.g. '
                '{"%": ["a", "b"]}', v_bad, split_part(v_bad, ',', 1)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_place := v_place || jsonb_strip_nulls(p_place);
    END IF;
    IF v_place = '{}' THEN
        RETURN NULL;
    END IF;
    -- a sensor passes when each key's list holds its value (a JSON string: @> compares exactly)
    SELECT coalesce(array_agg(x.id), '{}') INTO v_ids
      FROM ranger._places() x
     WHERE NOT EXISTS (SELECT 1 FROM jsonb_each(v_place) f
                        WHERE NOT coalesce(f.value @> to_jsonb(x.place ->> f.key), false));
    RETURN v_ids;
END
$fn$;

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
    p_ef_search integer DEFAULT NULL,
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (
    segment_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, label text, method text
)
-- VOLATILE only because it EXPLAINs the filter to estimate its selectivity; it writes nothing.
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
-- Function-level SETs: what set_config() changes below is restored when the function returns.
-- jit off: a PostgreSQL built with LLVM (Debian's and PGDG's packages, the official Docker
-- images) JIT-compiles every statement whose estimated cost passes jit_above_cost, and an
-- HNSW scan's estimate does: the compilation took ~90 ms of a 2 ms search (PostgreSQL 15,
-- bench/citus.py), while the scan's work is in pgvector's C code, which JIT cannot speed up.
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
SET jit = off
AS $fn$
DECLARE
    v_dim integer;
    v_index text;
    v_ids integer[];
    v_where text;
    v_total double precision;
    v_estimate double precision;
    v_plan json;
    v_method text := p_strategy;
    v_limit integer;
    v_over boolean := false;
    v_distributed boolean := false;
    v_count bigint;
    v_factor integer;
    v_guard text;
    v_guard_ef integer;
    v_hit_ids bigint[];
    v_hit_scores real[];
BEGIN
    -- Input checks (the helpers raise the message; plain IFs are evaluated without a query).
    IF p_k IS NULL OR p_k NOT BETWEEN 1 AND 10000 THEN
        PERFORM ranger._check_int('p_k (the number of results)', p_k, 1, 10000);
    END IF;
    IF p_exact_limit NOT BETWEEN 0 AND 100000000 THEN
        PERFORM ranger._check_int('p_exact_limit', p_exact_limit, 0, 100000000, true);
    END IF;
    IF p_ef_search NOT BETWEEN 1 AND 1000 THEN
        PERFORM ranger._check_int('p_ef_search', p_ef_search, 1, 1000, true);
    END IF;
    IF p_query IS NULL OR NOT (vector_norm(p_query) > 0) THEN
        PERFORM ranger._check_query('p_query', p_query);
    END IF;
    IF v_method NOT IN ('auto', 'hnsw', 'exact') OR v_method IS NULL THEN
        RAISE EXCEPTION 'strategy must be auto, hnsw or exact, not %', v_method;
    END IF;
    SELECT sp.dimension, ranger._index_key(sp.id, sp.index_type) INTO v_dim, v_index
      FROM spaces sp WHERE sp.id = p_space;
    IF v_dim IS NULL THEN
        RAISE EXCEPTION 'no space with id %', p_space;
    END IF;
    IF vector_dims(p_query) <> v_dim THEN
        RAISE EXCEPTION 'query vector has % dimensions, space % has %',
            vector_dims(p_query), p_space, v_dim;
    END IF;
    -- The query's direction only: a vector of tiny (or huge) elements has a norm in double
    -- precision but its float32 sums underflow (overflow) in the distance, which then is NaN.
    -- Stored windows are unit vectors, so the ranking and the scores are unchanged.
    p_query := l2_normalize(p_query);
    -- An exact scan costs about (rows x dimension): auto scans exactly up to what fits in its
    -- latency budget (ranger._exact_limit).
    v_limit := coalesce(p_exact_limit, ranger._exact_limit(v_dim));
    IF v_method <> 'exact' THEN
        -- the space's recall guard: its index measured under the recall wanted
        SELECT c.guard, c.guard_ef INTO v_guard, v_guard_ef FROM ranger.index_recall(p_space) c;
        IF v_guard = 'exact' AND v_method = 'auto' THEN
            v_method := 'exact';
        END IF;
    END IF;
    IF num_nonnulls(p_sensors, p_sites, p_quadrants, p_place) > 0 THEN
        v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place);
    END IF;
    v_where := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                  p_at_from, p_at_to, p_exclude);

    IF v_method <> 'exact' AND ranger._compact(v_index) THEN
        -- a compact index's candidates per result (ranger._candidates_factor_sql), for the
        -- choice of strategy and ef_search below
        EXECUTE 'SELECT ' || ranger._candidates_factor_sql(v_index) INTO v_factor;
    END IF;
    IF v_method = 'auto' OR (v_method = 'hnsw' AND p_ef_search IS NULL) THEN
        -- How many windows pass the filters: the planner's estimate (no filter: all of them).
        v_total := greatest(ranger._space_rows(p_space), 1);
        -- On a Citus coordinator (segments distributed) the filter is not EXPLAINed: Citus
        -- plans it on the workers and the ranking statement after it then fails ("cannot
        -- switch local execution status").
        v_distributed := ranger._segments_distributed();
        IF v_distributed AND v_method = 'auto' THEN
            -- A coordinator has no estimate (its own tables hold no rows): count the passing
            -- windows, up to the limit + 1, on the shards. Only a count crosses the network;
            -- the capped statement would ship every collected row with its 4 kB vector to the
            -- coordinator (120 ms of a 10 ms search at 100k windows, docs/scaling.md).
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM segments g WHERE %s LIMIT $11) c',
                           v_where)
               INTO v_count
              USING NULL::integer, p_space, v_ids, p_time_from, p_time_to, p_date_from,
                    p_date_to, p_at_from, p_at_to, p_exclude, v_limit + 1;
            v_method := CASE WHEN v_count <= v_limit THEN 'exact' ELSE 'hnsw' END;
            v_estimate := greatest(v_count, 1);
            v_total := greatest(v_total, v_estimate);
        ELSIF v_distributed
           OR v_where IN ('g.space_id = $2', 'g.space_id = $2 AND g.id <> $10') THEN
            v_estimate := v_total;
        ELSE
            -- $1 (the query vector) is unused by the filter: a NULL integer stands in, since
            -- Citus forwards the EXPLAIN's parameters to workers that cannot type an unused
            -- extension-type one (and then abort the worker's transaction)
            EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM segments g WHERE %s', v_where)
               INTO v_plan
              USING NULL::integer, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                    p_at_from, p_at_to, p_exclude;
            v_estimate := (v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
        END IF;
        -- Near the exact-scan limit (under twice it) or below: the exact scan, capped at the
        -- limit (it counts as it collects the passing rows and gives up past the limit, see
        -- _search_vector_sql). Far above: the index, without counting.
        IF v_method = 'auto' AND v_total > 1 AND v_estimate * 8 <= v_limit THEN
            -- far below the limit: the exact scan without the cap's bookkeeping (~0.3 ms of a
            -- 1 ms call). An estimate 8x too low costs an exact scan past the limit, not a
            -- wrong answer. Only with statistics (v_total > 1): before the space's first
            -- ANALYZE, and always on a Citus coordinator (whose own tables hold no rows),
            -- the estimate says nothing and the capped scan counts instead.
            v_method := 'exact';
        ELSIF v_method = 'auto' AND v_estimate < 2 * v_limit THEN
            FOR segment_id, score, recording_id, path, sensor, site, quadrant, start_s, end_s,
                starts_at, local_date, local_time, label, method IN EXECUTE
                    ranger._search_vector_sql(v_dim, v_where, 'capped', v_index)
                USING p_query, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                      p_at_from, p_at_to, p_exclude, p_k, p_min_score, v_limit
            LOOP
                IF method = 'too many' THEN
                    v_over := true;
                ELSE
                    RETURN NEXT;
                END IF;
            END LOOP;
            IF NOT v_over THEN
                RETURN;
            END IF;
            v_estimate := greatest(v_estimate, v_limit + 1);
        END IF;
        IF v_method = 'auto' THEN
            -- so selective that the index scan would give up before finding what it needs
            -- (max_scan_tuples x passing/total < 4 k, or for a compact index its candidates, up
            -- to half of max_scan_tuples: a large k takes what the scan can give rather than an
            -- exact scan of every passing window): exact, whatever the count
            v_method := CASE WHEN current_setting('hnsw.max_scan_tuples')::double precision
                                  * least(1, v_estimate / v_total)
                                  < CASE WHEN v_factor IS NULL THEN 4 * p_k
                                         ELSE least(v_factor * p_k, current_setting(
                                             'hnsw.max_scan_tuples')::double precision / 2) END
                             THEN 'exact' ELSE 'hnsw' END;
        END IF;
    END IF;

    IF v_method = 'hnsw' THEN
        -- ef_search: ranger._ef_search's rule, or more if the space's recall guard asks
        PERFORM set_config('hnsw.ef_search', coalesce(p_ef_search,
            greatest(ranger._ef_search(v_total, v_estimate, p_k, v_factor), v_guard_ef))::text,
            true);
        -- The index it is: pgvector's cost model grows with ef_search and, for a filter
        -- passing ~10 %, took a sequential scan and a sort of every passing row for cheaper
        -- above ef_search ~150 (100k windows: 0.7 s instead of 20-60 ms).
        PERFORM set_config('enable_seqscan', 'off', true),
                set_config('enable_bitmapscan', 'off', true),
                set_config('enable_sort', 'off', true);
    END IF;
    IF v_method = 'hnsw' AND p_strategy = 'auto' THEN
        -- auto never returns less than the index found room for: the index scan gives up after
        -- hnsw.max_scan_tuples, and where a filter's passing windows lie far from the query
        -- (the night windows of a daytime sound, copies of one background) it found fewer
        -- than k, even none, while k pass the filter (issue 22: 0 rows for a 20 % filter).
        -- So the index's hits are collected first (ids and distances, without the score
        -- cut), and fewer than k are ranked exactly instead.
        EXECUTE format('SELECT array_agg(t.c1 ORDER BY t.c2 DESC, t.c1), '
                       'array_agg(t.c2 ORDER BY t.c2 DESC, t.c1) FROM (%s) '
                       't(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14)',
                       ranger._search_vector_sql(v_dim, v_where, v_method, v_index))
           INTO v_hit_ids, v_hit_scores
          USING p_query, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                p_at_from, p_at_to, p_exclude, p_k, NULL::real;
        IF coalesce(cardinality(v_hit_ids), 0) >= p_k THEN
            RETURN QUERY
                SELECT g.id, v_hit_scores[array_position(v_hit_ids, g.id)], g.recording_id,
                       r.path, s.name, s.site, s.quadrant, g.start_s, g.end_s, g.starts_at,
                       g.local_date, g.local_time, NULL::text, 'hnsw'::text
                  FROM segments g
                  JOIN recordings r ON r.id = g.recording_id
                  JOIN sensors s ON s.id = g.sensor_id
                 WHERE g.space_id = p_space AND g.id = ANY(v_hit_ids)
                   AND (p_min_score IS NULL
                        OR v_hit_scores[array_position(v_hit_ids, g.id)] >= p_min_score)
                 ORDER BY array_position(v_hit_ids, g.id);
            RETURN;
        END IF;
        v_method := 'exact';
        PERFORM set_config('enable_seqscan', 'on', true),
                set_config('enable_bitmapscan', 'on', true),
                set_config('enable_sort', 'on', true);
    END IF;
    RETURN QUERY EXECUTE ranger._search_vector_sql(v_dim, v_where, v_method, v_index)
        USING p_query, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, p_exclude, p_k, p_min_score;
END
$fn$;

CREATE OR REPLACE FUNCTION ranger.search_labels(
    p_space integer,
    p_labels integer[],
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
    p_all_species boolean DEFAULT false,
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (
    segment_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, label text, method text
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_ids integer[];
    v_where text;
    v_model text;
    v_plausible text := '';
    v_join boolean;
BEGIN
    PERFORM ranger._check_int('p_k (the number of results)', p_k, 1, 10000);
    v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place);
    v_where := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                  p_at_from, p_at_to, NULL);
    SELECT sp.model INTO v_model FROM spaces sp WHERE sp.id = p_space;
    IF NOT coalesce(p_all_species, false)
       AND EXISTS (SELECT 1 FROM occurrence_sensors os WHERE os.model = v_model) THEN
        -- the best label of a window among the plausible ones only
        v_plausible := 'AND (NOT EXISTS (SELECT 1 FROM occurrence_sensors os
                                          WHERE os.model = $13 AND os.sensor_id = g.sensor_id)
                             OR EXISTS (SELECT 1 FROM occurrence o
                                         WHERE o.model = $13 AND o.sensor_id = g.sensor_id
                                           AND o.week = ranger.birdnet_week(g.local_date)
                                           AND o.label_id = sc.label_id))';
    END IF;
    -- with place/time filters or the plausibility check, the windows are joined (and
    -- filtered) before picking each one's best label, not after
    v_join := v_plausible <> '' OR v_where <> 'g.space_id = $2';
    RETURN QUERY EXECUTE format(
        'WITH best AS MATERIALIZED (
             SELECT DISTINCT ON (sc.segment_id) sc.segment_id, sc.label_id, sc.score
               FROM segment_scores sc
               %s
              WHERE sc.space_id = $2 AND sc.label_id = ANY($1)
                AND sc.score >= coalesce($12, 0) %s %s
              ORDER BY sc.segment_id, sc.score DESC, sc.label_id)
         SELECT g.id, b.score, g.recording_id, r.path, s.name, s.site, s.quadrant,
                g.start_s, g.end_s, g.starts_at, g.local_date, g.local_time,
                coalesce(l.common, l.name), ''labels''
           FROM best b
           JOIN segments g ON g.space_id = $2 AND g.id = b.segment_id
           JOIN recordings r ON r.id = g.recording_id
           JOIN sensors s ON s.id = g.sensor_id
           JOIN space_labels l ON l.space_id = $2 AND l.label_id = b.label_id
          WHERE %s
          ORDER BY b.score DESC, g.id
          LIMIT $11',
        CASE WHEN v_join THEN 'JOIN segments g ON g.space_id = $2 AND g.id = sc.segment_id'
             ELSE '' END,
        CASE WHEN v_join THEN 'AND ' || v_where ELSE '' END, v_plausible, v_where)
        USING p_labels, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint, p_k, p_min_score, v_model;
END
$fn$;

CREATE OR REPLACE FUNCTION ranger.filtered_windows(
    p_space integer,
    p_sensors text[] DEFAULT NULL,
    p_sites text[] DEFAULT NULL,
    p_quadrants text[] DEFAULT NULL,
    p_time_from time DEFAULT NULL,
    p_time_to time DEFAULT NULL,
    p_date_from date DEFAULT NULL,
    p_date_to date DEFAULT NULL,
    p_at_from timestamptz DEFAULT NULL,
    p_at_to timestamptz DEFAULT NULL,
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (segment_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_ids integer[] := ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT g.id FROM segments g WHERE %s ORDER BY g.recording_id, g.start_s',
        ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                           p_at_from, p_at_to, NULL))
        USING NULL::vector, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint;
END
$fn$;

CREATE OR REPLACE FUNCTION ranger.search_classifier(
    p_classifier text,
    p_label text,
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
    p_version integer DEFAULT NULL,
    p_order text DEFAULT 'top',
    p_unlabelled boolean DEFAULT false,
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (
    segment_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, label text, method text
)
-- VOLATILE like ranger.search_vector, which it calls (that one EXPLAINs); it writes nothing.
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    m record;
    v_ids integer[];
    v_where text;
    v_min_logit double precision;
    v_norm double precision;
    v_ann_recording bigint[];
    v_ann_start double precision[];
    v_ann_end double precision[];
BEGIN
    PERFORM ranger._check_int('p_k (the number of results)', p_k, 1, 10000);
    IF p_order IS NULL OR p_order NOT IN ('top', 'margin') THEN
        RAISE EXCEPTION 'p_order must be top or margin, not %', coalesce(p_order, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO m FROM ranger._classifier_label(p_classifier, p_label, p_version);
    v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place);
    v_where := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                  p_at_from, p_at_to, NULL);
    IF p_unlabelled THEN
        -- The label's annotations are read first (a few hundred, not a join with every
        -- window): on a Citus cluster annotations is a table of the coordinator (its trigger),
        -- which a query on the windows' shards may not join; the same rows on one server.
        SELECT coalesce(array_agg(a.recording_id), '{}'), coalesce(array_agg(a.start_s), '{}'),
               coalesce(array_agg(a.end_s), '{}')
          INTO v_ann_recording, v_ann_start, v_ann_end
          FROM annotations a WHERE a.label = p_label;
        v_where := v_where || ' AND NOT EXISTS (SELECT 1 FROM unnest($16, $17, $18)
                                      a(recording_id, start_s, end_s)
                                  WHERE a.recording_id = g.recording_id
                                    AND a.start_s < g.end_s AND a.end_s > g.start_s)';
    END IF;
    IF p_min_score IS NOT NULL THEN
        IF p_min_score >= 1 THEN
            RETURN;
        END IF;
        IF p_min_score > 0 THEN
            v_min_logit := ln(p_min_score / (1 - p_min_score));
        END IF;
    END IF;
    -- Top windows: embeddings are unit vectors (every model's contract), so w . x = |w| cos(w, x)
    -- and the order by logit is the order by cosine similarity to w: ranger.search_vector
    -- ranks them (the space's HNSW index, or an exact scan for selective filters, as it
    -- decides), and the logit is b + |w| cos, from the float32 cosine it returns.
    v_norm := vector_norm(m.weights);
    IF p_order = 'top' AND NOT p_unlabelled AND v_norm > 0 THEN
        RETURN QUERY
        SELECT h.segment_id,
               (1 / (1 + exp(-greatest(-50, least(50, m.bias + v_norm * h.score)))))::real,
               h.recording_id, h.path, h.sensor, h.site, h.quadrant, h.start_s, h.end_s,
               h.starts_at, h.local_date, h.local_time, p_label, 'classifier ' || h.method
          FROM ranger.search_vector(m.space_id, m.weights, p_k, p_sensors, p_sites,
                   p_quadrants, p_time_from, p_time_to, p_date_from, p_date_to, p_at_from,
                   p_at_to,
                   CASE WHEN v_min_logit IS NULL THEN NULL
                        ELSE greatest(-2, least(2, (v_min_logit - m.bias) / v_norm))::real
                   END, p_place => p_place) h
         ORDER BY h.score DESC, h.segment_id;
        RETURN;
    END IF;
    IF v_min_logit IS NOT NULL THEN
        v_where := v_where || format(
                ' AND $13 - (g.embedding::vector(%1$s) <#> $1::vector(%1$s)) >= $12',
                m.dimension);
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH hits AS MATERIALIZED (
             SELECT g.id, g.recording_id, g.sensor_id, g.start_s, g.end_s, g.starts_at,
                    g.local_date, g.local_time,
                    $13 - (g.embedding::vector(%1$s) <#> $1::vector(%1$s)) AS logit
               FROM segments g
              WHERE %2$s
              ORDER BY %3$s, g.id
              LIMIT $11)
         SELECT h.id, (1 / (1 + exp(-greatest(-50, least(50, h.logit)))))::real,
                h.recording_id, r.path, s.name, s.site, s.quadrant, h.start_s, h.end_s,
                h.starts_at, h.local_date, h.local_time, $14::text, ''classifier''::text
           FROM hits h
           JOIN recordings r ON r.id = h.recording_id
           JOIN sensors s ON s.id = h.sensor_id
          ORDER BY %4$s, h.id',
        m.dimension, v_where,
        CASE WHEN p_order = 'top' THEN '9 DESC'
             ELSE format('abs(1 / (1 + exp(-greatest(-50, least(50, $13 - '
                         '(g.embedding::vector(%1$s) <#> $1::vector(%1$s)))))) - $15)',
                         m.dimension) END,
        CASE WHEN p_order = 'top' THEN 'h.logit DESC'
             ELSE 'abs(1 / (1 + exp(-greatest(-50, least(50, h.logit)))) - $15)' END)
        USING m.weights, m.space_id, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint, p_k, v_min_logit, m.bias, p_label,
              m.threshold::double precision, v_ann_recording, v_ann_start, v_ann_end;
END
$fn$;

CREATE OR REPLACE FUNCTION ranger._classify_batch(
    p_classifier integer,
    p_from bigint,
    p_to bigint,
    p_new boolean DEFAULT false,
    p_sensors text[] DEFAULT NULL,
    p_sites text[] DEFAULT NULL,
    p_quadrants text[] DEFAULT NULL,
    p_time_from time DEFAULT NULL,
    p_time_to time DEFAULT NULL,
    p_date_from date DEFAULT NULL,
    p_date_to date DEFAULT NULL,
    p_at_from timestamptz DEFAULT NULL,
    p_at_to timestamptz DEFAULT NULL,
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (scored bigint, detected bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_space integer;
    v_dim integer;
    v_ids integer[];
    v_where text;
    v_scored bigint;
    v_detected bigint;
BEGIN
    SELECT c.space_id, sp.dimension INTO v_space, v_dim
      FROM classifiers c JOIN spaces sp ON sp.id = c.space_id WHERE c.id = p_classifier;
    IF v_space IS NULL THEN
        RAISE EXCEPTION 'no classifier with id %', p_classifier;
    END IF;
    v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place);
    v_where := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                  p_at_from, p_at_to, NULL)
               || ' AND g.id >= $11 AND g.id < $12';
    IF p_new THEN
        v_where := v_where || ' AND NOT EXISTS (SELECT 1 FROM classifier_scored cs
                                  WHERE cs.classifier_id = $1 AND cs.segment_id = g.id)';
    END IF;
    EXECUTE format('SELECT count(*) FROM segments g WHERE %s', v_where)
       INTO v_scored
      USING p_classifier, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
            p_at_from, p_at_to, NULL::bigint, p_from, p_to;
    -- One scan of the batch: every label's logit for each window, kept when above threshold.
    EXECUTE format(
        'INSERT INTO classifier_detections (classifier_id, label, space_id, segment_id, score)
         SELECT $1, x.label, $2, x.id, (1 / (1 + exp(-greatest(-50, least(50, x.logit)))))::real
           FROM (SELECT g.id, l.label, l.threshold,
                        l.bias - (g.embedding::vector(%1$s) <#> l.weights::vector(%1$s)) AS logit
                   FROM segments g
                   CROSS JOIN classifier_labels l
                  WHERE l.classifier_id = $1 AND %2$s) x
          WHERE x.logit >= ln(x.threshold / (1 - x.threshold))
         ON CONFLICT (classifier_id, label, segment_id)
         DO UPDATE SET score = EXCLUDED.score, detected_at = EXCLUDED.detected_at',
        v_dim, v_where)
        USING p_classifier, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint, p_from, p_to;
    GET DIAGNOSTICS v_detected = ROW_COUNT;
    EXECUTE format(
        'INSERT INTO classifier_scored (classifier_id, space_id, segment_id)
         SELECT $1, $2, g.id FROM segments g WHERE %s
         ON CONFLICT DO NOTHING', v_where)
        USING p_classifier, v_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint, p_from, p_to;
    RETURN QUERY SELECT v_scored, v_detected;
END
$fn$;

CREATE OR REPLACE VIEW ranger.windows AS
SELECT g.id AS segment_id, sp.name AS space, g.recording_id, s.name AS sensor, s.site,
       s.quadrant, g.local_date, g.local_time, g.starts_at, r.path, g.start_s, g.end_s
  FROM segments g
  JOIN spaces sp ON sp.id = g.space_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id;

-- Frozen (never edited, never applied by an upgrade): ranger._speech_filtered and
-- ranger.search_speech as migration 0035 left them, before 0036 gave what was said the sun
-- filter. Applied by 0036's downgrade after it drops _speech_filtered's new signature.
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION ranger._speech_filtered(
    p_ids integer[], p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz
) RETURNS SETOF public.utterances
LANGUAGE sql STABLE AS $$
    SELECT u.* FROM public.utterances u
     WHERE (p_ids IS NULL OR u.sensor_id = ANY (p_ids))
       AND ranger.in_time_filter(u.local_time, u.local_date, u.starts_at, p_time_from,
                                 p_time_to, p_date_from, p_date_to, p_at_from, p_at_to)
$$;

CREATE OR REPLACE FUNCTION ranger.search_speech(
    p_query text,
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
    p_fuzzy boolean DEFAULT true,
    p_min_similarity real DEFAULT 0.6,
    p_speaker text DEFAULT NULL,
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (
    utterance_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, snippet text, text text, language text, model text, method text,
    match text, matched text, speaker text
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
SET pg_trgm.word_similarity_threshold = 0.6
SET pg_trgm.similarity_threshold = 0.6
AS $fn$
#variable_conflict use_column
DECLARE
    v_ids integer[];
    v_tsq tsquery;
    v_terms record;
    v_near tsquery;
    v_sounds jsonb;
    v_heard jsonb;
    v_word text;
    v_need boolean := true;
BEGIN
    PERFORM ranger._check_int('p_k (the number of results)', p_k, 1, 10000);
    IF coalesce(btrim(p_query), '') = '' THEN
        RAISE EXCEPTION 'p_query (what was said) is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a query is a few words or phrases: a megabyte one parsed for 30 s into "stack depth
    -- limit exceeded"
    IF length(p_query) > 1000 THEN
        RAISE EXCEPTION 'p_query (what was said) has % characters; at most 1000', length(p_query)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'search for a few words or "a phrase"';
    END IF;
    IF p_min_similarity IS NULL OR NOT (p_min_similarity > 0 AND p_min_similarity <= 1) THEN
        RAISE EXCEPTION 'p_min_similarity must be in (0, 1], not %', p_min_similarity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('pg_trgm.word_similarity_threshold', p_min_similarity::text, true);
    PERFORM set_config('pg_trgm.similarity_threshold', p_min_similarity::text, true);
    v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place);
    v_tsq := websearch_to_tsquery('english', p_query);
    IF numnode(v_tsq) = 0 THEN
        v_tsq := NULL;  -- only stop words (or nothing): the fuzzy part alone answers
    END IF;
    SELECT * INTO v_terms FROM ranger._speech_terms(p_query);
    -- The fuzzy and phonetic parts run only when the full text finds fewer than k (with the
    -- filters).
    IF p_fuzzy AND v_terms.fuzzy <> '' AND v_tsq IS NOT NULL THEN
        SELECT count(*) < p_k INTO v_need
          FROM (SELECT 1 FROM ranger._speech_filtered(v_ids, p_time_from, p_time_to, p_date_from,
                                                      p_date_to, p_at_from, p_at_to) u
                 WHERE u.tsv @@ v_tsq AND (p_speaker IS NULL OR u.speaker = p_speaker)
                 LIMIT p_k) x;
    END IF;
    IF p_fuzzy AND v_terms.fuzzy <> '' AND v_need THEN
        -- the stored words spelt like the query, one of its words or all of them run together
        FOR v_word IN
            SELECT DISTINCT w.word
              FROM unnest(array_append(string_to_array(v_terms.fuzzy, ' '), v_terms.nospace)) q(term)
              CROSS JOIN LATERAL (SELECT sw.word FROM speech_words sw
                                   WHERE sw.word % q.term AND NOT sw.doubtful
                                   ORDER BY similarity(sw.word, q.term) DESC, sw.word
                                   LIMIT 20) w
        LOOP
            v_near := CASE WHEN v_near IS NULL THEN plainto_tsquery('english', v_word)
                           ELSE v_near || plainto_tsquery('english', v_word) END;
        END LOOP;
        IF v_near IS NOT NULL AND numnode(v_near) = 0 THEN
            v_near := NULL;
        END IF;
        -- The doubted words that sound like the query's (speech_words.sound, sound_alt), best
        -- first: the same code 0.7, one sound apart 0.4, plus 0.3 times the letters' trigram
        -- similarity (the score of their hits: it depends on the word, not the utterance).
        SELECT jsonb_agg(jsonb_build_object('term', x.term, 'code', x.code))
          INTO v_sounds FROM ranger._speech_sounds(v_terms.fuzzy) x;
        IF v_sounds IS NOT NULL THEN
            SELECT jsonb_agg(jsonb_build_object('word', c.word, 'score', c.score)
                             ORDER BY c.score DESC, c.word)
              INTO v_heard
              FROM (SELECT sw.word,
                           max(CASE WHEN q ->> 'code' IN (sw.sound, sw.sound_alt) THEN 0.7
                                    ELSE 0.4 END
                               + 0.3 * similarity(sw.word, q ->> 'term'))::real AS score
                      FROM jsonb_array_elements(v_sounds) q
                      CROSS JOIN LATERAL ranger._speech_near_codes(q ->> 'code') n(codes)
                      JOIN speech_words sw
                        ON sw.doubtful
                       AND (sw.sound = ANY (n.codes) OR sw.sound_alt = ANY (n.codes))
                     GROUP BY sw.word
                     ORDER BY 2 DESC, 1
                     LIMIT 20) c;
        END IF;
    END IF;
    RETURN QUERY
    WITH f AS NOT MATERIALIZED (
        SELECT u.* FROM ranger._speech_filtered(v_ids, p_time_from, p_time_to, p_date_from,
                                                p_date_to, p_at_from, p_at_to) u
         WHERE p_speaker IS NULL OR u.speaker = p_speaker
    ), ft AS MATERIALIZED (
        SELECT f.id, ts_rank_cd(f.tsv, v_tsq, 32)::real AS score
          FROM f
         WHERE v_tsq IS NOT NULL AND f.tsv @@ v_tsq
         ORDER BY 2 DESC, f.id
         LIMIT p_k
    ), fz AS MATERIALIZED (
        SELECT c.id, c.score FROM (
            SELECT f.id, greatest(word_similarity(v_terms.fuzzy, f.text),
                                  word_similarity(v_terms.nospace, f.text))::real AS score
              FROM f
             WHERE p_fuzzy AND v_terms.fuzzy <> '' AND v_need
               AND (SELECT count(*) FROM ft) < p_k
               AND ((v_near IS NOT NULL AND f.tsv @@ v_near)
                    OR (v_near IS NULL
                        AND (v_terms.fuzzy <% f.text OR v_terms.nospace <% f.text)))
               AND f.id NOT IN (SELECT ft.id FROM ft)
               AND (v_terms.excluded IS NULL OR NOT f.tsv @@ v_terms.excluded)) c
         WHERE c.score >= p_min_similarity
         ORDER BY c.score DESC, c.id
         LIMIT p_k
    ), ph AS MATERIALIZED (
        -- phonetic: per doubted word that sounds like the query's (best first), up to k of the
        -- utterances where Whisper doubted it; the best k of them
        SELECT x.id, x.score, x.first_word, x.first_word AS last_word
          FROM jsonb_array_elements(v_heard) c
          CROSS JOIN LATERAL (
              SELECT f.id, (c.value ->> 'score')::real AS score,
                     ranger._speech_doubted(f.words, c.value ->> 'word') AS first_word
                FROM f
               WHERE f.tsv @@ plainto_tsquery('english', c.value ->> 'word')
                 AND ranger._speech_doubted(f.words, c.value ->> 'word') IS NOT NULL
                 AND f.id NOT IN (SELECT ft.id FROM ft) AND f.id NOT IN (SELECT fz.id FROM fz)
                 AND (v_terms.excluded IS NULL OR NOT f.tsv @@ v_terms.excluded)
               LIMIT p_k) x
         WHERE v_heard IS NOT NULL
           AND (SELECT count(*) FROM ft) + (SELECT count(*) FROM fz) < p_k
         ORDER BY x.score DESC, x.id
         LIMIT p_k
    ), hits AS (
        SELECT ft.id, ft.score, 'fulltext'::text AS method, 0 AS tier,
               NULL::integer AS first_word, NULL::integer AS last_word FROM ft
        UNION ALL
        SELECT fz.id, fz.score, 'fuzzy'::text, 1, NULL, NULL FROM fz
        UNION ALL
        SELECT ph.id, ph.score, 'phonetic'::text, 2, ph.first_word, ph.last_word FROM ph
    ), ranked AS (
        SELECT hits.* FROM hits ORDER BY hits.tier, hits.score DESC, hits.id LIMIT p_k
    )
    SELECT u.id, h.score, u.recording_id, r.path, s.name, s.site, s.quadrant,
           w.start_s, w.end_s, w.starts_at, (w.starts_at AT TIME ZONE s.timezone)::date,
           (w.starts_at AT TIME ZONE s.timezone)::time,
           CASE WHEN h.method = 'fulltext'
                THEN ts_headline('english', u.text, v_tsq,
                                 'StartSel=**, StopSel=**, MinWords=20, MaxWords=40')
                WHEN sp.first_word IS NOT NULL
                THEN ranger._speech_mark(u.words, sp.first_word, sp.last_word)
                ELSE u.text END,
           u.text, u.language, t.model || ' ' || t.model_version, h.method,
           -- how it matched: the query's word as said (exact), its stem, a spelling, a sound
           CASE h.method WHEN 'fuzzy' THEN 'trigram' WHEN 'phonetic' THEN 'phonetic'
                ELSE CASE WHEN m.words && string_to_array(v_terms.fuzzy, ' ')
                          THEN 'exact' ELSE 'stem' END END,
           m.matched, u.speaker
      FROM ranked h
      JOIN utterances u ON u.id = h.id
      JOIN transcripts t ON t.id = u.transcript_id
      JOIN recordings r ON r.id = u.recording_id
      JOIN sensors s ON s.id = u.sensor_id
      LEFT JOIN LATERAL (
          SELECT (u.words -> h.first_word ->> 's')::real AS start_s,
                 (u.words -> h.last_word ->> 'e')::real AS end_s, h.first_word, h.last_word
           WHERE h.method = 'phonetic'
          UNION ALL
          SELECT x.start_s, x.end_s, x.first_word, x.last_word
            FROM ranger._speech_span(
                u.words, CASE WHEN h.method = 'fulltext' THEN v_terms.lexemes END,
                v_terms.fuzzy) x
           WHERE h.method <> 'phonetic') sp ON true
      -- the matched words as said, and lower case without punctuation (for exact/stem)
      LEFT JOIN LATERAL (
          SELECT string_agg(e.w ->> 'w', ' ' ORDER BY e.ord) AS matched,
                 array_agg(lower(regexp_replace(e.w ->> 'w', '[^[:alnum:]]', '', 'g')))
                     AS words
            FROM jsonb_array_elements(u.words) WITH ORDINALITY AS e(w, ord)
           WHERE e.ord - 1 BETWEEN sp.first_word AND sp.last_word) m ON true
      -- the hit's words (the whole utterance when no span was found) and when they start
      CROSS JOIN LATERAL (
          SELECT coalesce(sp.start_s, u.start_s) AS start_s, coalesce(sp.end_s, u.end_s) AS end_s,
                 u.starts_at + (coalesce(sp.start_s, u.start_s) - u.start_s) * interval '1 second'
                     AS starts_at) w
     ORDER BY h.tier, h.score DESC, u.id;
END
$fn$;
