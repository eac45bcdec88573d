-- FROZEN: not a current definition (see sql/README.md). Used only by the downgrade of
-- migration 0011 (species): ranger.search_labels as search.sql defined it before 0011 added
-- p_all_species (BirdNET's location/season filter).
-- Never edit; never apply from an upgrade.

-- Label search for classifier spaces (BirdNET): windows ranked by their stored class score
-- for any of the given labels (the best one names the hit).
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
    p_min_score real DEFAULT NULL
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
BEGIN
    PERFORM ranger._check_int('p_k (the number of results)', p_k, 1, 10000);
    v_ids := ranger._sensor_ids(p_sensors, p_sites, p_quadrants);
    v_where := ranger._filter_sql(v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
                                  p_at_from, p_at_to, NULL);
    RETURN QUERY EXECUTE format(
        'WITH best AS MATERIALIZED (
             SELECT DISTINCT ON (sc.segment_id) sc.segment_id, sc.label_id, sc.score
               FROM segment_scores sc
              WHERE sc.space_id = $2 AND sc.label_id = ANY($1)
                AND sc.score >= coalesce($12, 0)
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
          LIMIT $11', v_where)
        USING p_labels, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint, p_k, p_min_score;
END
$fn$;
