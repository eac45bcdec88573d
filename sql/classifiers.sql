-- Few-shot classifiers (issue 11): ranking windows by a trained linear classifier, scoring
-- them into detections, and the views a BI tool reads. Idempotent (CREATE OR REPLACE);
-- applied by migration 0009 and by any later migration that changes this family.
--
-- A classifier label is a linear model on the space's float32 embeddings:
--     logit = w . x + b,   score = sigmoid(logit) (a probability, what every output shows).
-- pgvector's `<#>` is the NEGATIVE inner product, so logit = b - (x <#> w). Embeddings are
-- unit vectors, so the highest logits are the windows most cosine-similar to w: the top
-- windows come from ranger.search_vector (HNSW or exact, as it decides); the other orders
-- (margin, unannotated windows only) and scoring are exact scans of the filtered windows.
-- The logit is clamped to [-50, 50] before exp() so that no score overflows.

-- The classifier (latest version unless p_version) with the label's model; raises a clear
-- error otherwise. Returns classifier id, space id, dimension, weights, bias, threshold.
CREATE OR REPLACE FUNCTION ranger._classifier_label(
    p_classifier text, p_label text, p_version integer DEFAULT NULL
) RETURNS TABLE (
    classifier_id integer, space_id integer, dimension integer, weights vector,
    bias double precision, threshold real
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_id integer;
    v_space integer;
    v_labels text[];
BEGIN
    SELECT c.id, c.space_id, c.labels INTO v_id, v_space, v_labels
      FROM classifiers c
     WHERE c.name = p_classifier AND (p_version IS NULL OR c.version = p_version)
     ORDER BY c.version DESC LIMIT 1;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'no classifier named % (version %); see SELECT * FROM ranger.classifiers',
            p_classifier, coalesce(p_version::text, 'latest');
    END IF;
    IF NOT p_label = ANY(v_labels) THEN
        RAISE EXCEPTION 'classifier % has no label %; its labels: %',
            p_classifier, p_label, array_to_string(v_labels, ', ');
    END IF;
    RETURN QUERY
    SELECT v_id, v_space, sp.dimension, l.weights, l.bias, l.threshold
      FROM classifier_labels l JOIN spaces sp ON sp.id = v_space
     WHERE l.classifier_id = v_id AND l.label = p_label;
END
$fn$;

-- Windows ranked by a classifier label's score under the usual search filters (same columns
-- as ranger.search_vector). p_order: 'top' (highest score first) or 'margin' (score nearest
-- the label's threshold first, both probabilities; for active learning). p_unlabelled: leave
-- out windows that overlap any annotation of that label (what a review batch wants).
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
                                  p_at_from, p_at_to, NULL, p_place ->> 'sun');
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

-- Score the windows of one classifier version whose ids lie in [p_from, p_to) and pass the
-- filters: store those above a label's threshold as detections and remember every scored
-- window (classifier_scored). p_new: skip windows this version has scored before. Called by
-- `soundscape classify --classifier` batch by batch (bounded work per statement). Returns
-- (windows scored, detections stored). SECURITY INVOKER: only the owner of the tables can
-- run it (the BI reader cannot write).
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
                                  p_at_from, p_at_to, NULL, p_place ->> 'sun')
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

-- The id of the newest version of each classifier (by name) that has scored any window (a
-- row in classifier_scored): what ranger.detections shows. One index probe of
-- classifier_scored per version, newest first, until a name has one (on Citus each probe is
-- a query on every shard's primary key, never a copy of the table). SECURITY DEFINER and
-- not internal (no leading _): the readers of the views that call it (BI roles, which may
-- not read the tables) need to execute it.
CREATE OR REPLACE FUNCTION ranger.newest_scored_classifiers() RETURNS SETOF integer
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    r record;
    v_found text;
BEGIN
    FOR r IN SELECT c.id, c.name FROM classifiers c ORDER BY c.name, c.version DESC LOOP
        CONTINUE WHEN r.name = v_found;  -- a newer version of this name has scored
        IF EXISTS (SELECT 1 FROM classifier_scored cs WHERE cs.classifier_id = r.id) THEN
            v_found := r.name;
            RETURN NEXT r.id;
        END IF;
    END LOOP;
END
$fn$;

-- One row per classifier version and label: its space, threshold, training counts and
-- cross-validated metrics, and how many detections it has stored.
CREATE OR REPLACE VIEW ranger.classifiers AS
SELECT c.name,
       c.version,
       sp.name                                              AS space,
       l.label,
       l.threshold,
       l.n_pos,
       l.n_neg,
       (l.metrics ->> 'precision')::double precision         AS precision,
       (l.metrics ->> 'recall')::double precision            AS recall,
       (l.metrics ->> 'average_precision')::double precision AS average_precision,
       (l.metrics ->> 'roc_auc')::double precision           AS roc_auc,
       l.metrics ->> 'note'                                 AS note,
       cardinality(c.annotation_ids)                        AS n_annotations,
       c.params,
       c.created_at,
       coalesce(d.n, 0)                                     AS detections
  FROM classifiers c
  JOIN spaces sp ON sp.id = c.space_id
  JOIN classifier_labels l ON l.classifier_id = c.id
  -- a join on the counts, not a count per row: Citus runs no correlated subquery on a
  -- distributed table (docs/scaling.md); the same rows on one server
  LEFT JOIN (SELECT classifier_id, label, count(*) AS n
               FROM classifier_detections
              GROUP BY classifier_id, label) d
         ON d.classifier_id = c.id AND d.label = l.label;

-- Every window a classifier version detected, with place and local time.
CREATE OR REPLACE VIEW ranger.classifier_detections AS
SELECT c.name          AS classifier,
       c.version,
       d.label,
       d.score,
       d.segment_id,
       g.recording_id,
       s.name          AS sensor,
       s.site,
       s.quadrant,
       g.local_date,
       g.local_time,
       g.starts_at,
       r.path,
       g.start_s,
       g.end_s,
       d.detected_at
  FROM classifier_detections d
  JOIN classifiers c ON c.id = d.classifier_id
  JOIN segments g ON g.space_id = d.space_id AND g.id = d.segment_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id;

-- Every detection, whoever made it, with place and local time. (Defined here, not in
-- search.sql, because it reads the classifier tables of migration 0009.)
--   source 'concept':    a stored concept's detection (ranger.refresh_detections); concept and
--                        label are the concept's name.
--   source 'classifier': a classifier label's detection (soundscape classify --classifier);
--                        concept is the classifier's name, label the label. Only the newest
--                        version of each classifier that has scored any window is shown
--                        (every version's detections: ranger.classifier_detections).
-- Those versions come from ranger.newest_scored_classifiers() in a materialized CTE: one
-- evaluation per query, on the coordinator of a Citus cluster (which runs no correlated
-- subquery on a distributed table, and would copy every classifier_scored row to the
-- coordinator for an IN (SELECT ...) subquery).
CREATE OR REPLACE VIEW ranger.detections AS
WITH newest AS MATERIALIZED (
    SELECT n.id FROM ranger.newest_scored_classifiers() n(id)
)
SELECT c.name          AS concept,
       d.score,
       d.segment_id,
       g.recording_id,
       s.name          AS sensor,
       s.site,
       s.quadrant,
       g.local_date,
       g.local_time,
       g.starts_at,
       r.path,
       g.start_s,
       g.end_s,
       c.name          AS label,
       'concept'::text AS source
  FROM detections d
  JOIN concepts c ON c.id = d.concept_id
  JOIN segments g ON g.space_id = d.space_id AND g.id = d.segment_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id
UNION ALL
SELECT k.name,
       d.score,
       d.segment_id,
       g.recording_id,
       s.name,
       s.site,
       s.quadrant,
       g.local_date,
       g.local_time,
       g.starts_at,
       r.path,
       g.start_s,
       g.end_s,
       d.label,
       'classifier'::text
  FROM classifier_detections d
  JOIN newest n ON n.id = d.classifier_id
  JOIN classifiers k ON k.id = d.classifier_id
  JOIN segments g ON g.space_id = d.space_id AND g.id = d.segment_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id;

-- Detections per concept (or classifier) and label, site/quadrant, local day and local hour.
CREATE OR REPLACE VIEW ranger.activity_by_hour AS
SELECT concept, site, quadrant, local_date AS day,
       extract(hour FROM local_time)::integer AS hour,
       count(*) AS detections,
       max(score) AS best_score,
       label,
       source
  FROM ranger.detections
 WHERE local_date IS NOT NULL
 GROUP BY concept, site, quadrant, local_date, extract(hour FROM local_time), label, source;

REVOKE EXECUTE ON FUNCTION ranger._classify_batch(integer, bigint, bigint, boolean, text[],
    text[], text[], time, time, date, date, timestamptz, timestamptz, jsonb) FROM PUBLIC;
