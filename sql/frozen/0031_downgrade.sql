-- Frozen (never edited, never applied by an upgrade; see sql/README.md): what migration
-- 0031's downgrade restores. ranger.refresh_detections as search.sql defined it before 0031
-- moved its rule into ranger._detect_concept (shared with refresh_recording_detections, which
-- the downgrade drops).

-- (Re)compute the stored detections of one concept (or all): windows whose score passes the
-- concept's threshold. Vector concepts need a threshold; label concepts default to 0.5, and
-- leave out classes BirdNET's occurrence model finds implausible at the window's sensor and
-- week, as search_labels and species_daily do. A vector concept with a zero embedding is an
-- error (every score would be NaN, and NaN >= threshold).
CREATE OR REPLACE FUNCTION ranger.refresh_detections(p_concept text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    c concepts%ROWTYPE;
    v_model text;
    v_dim integer;
    v_n bigint := 0;
    v_rows bigint;
BEGIN
    FOR c IN SELECT * FROM concepts WHERE p_concept IS NULL OR name = p_concept LOOP
        DELETE FROM detections WHERE concept_id = c.id;
        SELECT sp.model INTO v_model FROM spaces sp WHERE sp.id = c.space_id;
        IF c.label_ids IS NOT NULL
           AND EXISTS (SELECT 1 FROM occurrence_sensors os WHERE os.model = v_model) THEN
            -- the rule of search_labels and species_daily: a class BirdNET's occurrence model
            -- finds implausible at the window's sensor and week is no detection (sensors
            -- without a list and non-species classes are never filtered)
            INSERT INTO detections (concept_id, space_id, segment_id, score)
            SELECT c.id, c.space_id, sc.segment_id, max(sc.score)
              FROM segment_scores sc
              JOIN segments g ON g.space_id = sc.space_id AND g.id = sc.segment_id
             WHERE sc.space_id = c.space_id AND sc.label_id = ANY(c.label_ids)
               AND sc.score >= coalesce(c.threshold, 0.5)
               AND (NOT EXISTS (SELECT 1 FROM occurrence_sensors os
                                 WHERE os.model = v_model AND os.sensor_id = g.sensor_id)
                    OR EXISTS (SELECT 1 FROM occurrence o
                                WHERE o.model = v_model AND o.sensor_id = g.sensor_id
                                  AND o.week = ranger.birdnet_week(g.local_date)
                                  AND o.label_id = sc.label_id))
             GROUP BY sc.segment_id;
        ELSIF c.label_ids IS NOT NULL THEN
            INSERT INTO detections (concept_id, space_id, segment_id, score)
            SELECT c.id, c.space_id, sc.segment_id, max(sc.score)
              FROM segment_scores sc
             WHERE sc.space_id = c.space_id AND sc.label_id = ANY(c.label_ids)
               AND sc.score >= coalesce(c.threshold, 0.5)
             GROUP BY sc.segment_id;
        ELSIF c.threshold IS NOT NULL THEN
            PERFORM ranger._check_query(format('the embedding of concept %s', c.name), c.embedding);
            SELECT dimension INTO v_dim FROM spaces WHERE id = c.space_id;
            EXECUTE format(
                'INSERT INTO detections (concept_id, space_id, segment_id, score)
                 SELECT $1, $2, g.id, 1 - cosine_distance(g.embedding::vector(%1$s), $3::vector(%1$s))
                   FROM segments g
                  WHERE g.space_id = $2
                    AND 1 - cosine_distance(g.embedding::vector(%1$s), $3::vector(%1$s)) >= $4',
                v_dim)
            USING c.id, c.space_id, c.embedding, c.threshold;
        END IF;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_n := v_n + v_rows;
        UPDATE concepts SET refreshed_at = now() WHERE id = c.id;
    END LOOP;
    RETURN v_n;
END
$fn$;

REVOKE EXECUTE ON FUNCTION ranger.refresh_detections(text) FROM PUBLIC;
