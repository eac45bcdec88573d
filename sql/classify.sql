-- The classify family of the `ranger` schema (current definitions; see sql/README.md):
-- zero-shot classification runs and labels. Applied by migrations 0005, 0028 and 0036.

-- The windows of one space that pass the usual filters (same semantics as ranger.search_vector).
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
                           p_at_from, p_at_to, NULL, p_place ->> 'sun'))
        USING NULL::vector, p_space, v_ids, p_time_from, p_time_to, p_date_from, p_date_to,
              p_at_from, p_at_to, NULL::bigint;
END
$fn$;

CREATE OR REPLACE VIEW ranger.classify_runs AS
SELECT c.id AS run_id, sp.name AS space, c.labels, c.template, c.filters, c.n_windows,
       c.created_at
  FROM classify_runs c JOIN spaces sp ON sp.id = c.space_id;

-- "What is this window?": each classified window's top label from its latest run.
CREATE OR REPLACE VIEW ranger.window_labels AS
SELECT DISTINCT ON (c.space_id, c.segment_id)
       c.segment_id, sp.name AS space, c.label, c.score, c.run_id,
       s.name AS sensor, s.site, s.quadrant, g.local_date, g.local_time, g.starts_at,
       r.path, g.start_s, g.end_s
  FROM classifications c
  JOIN spaces sp ON sp.id = c.space_id
  JOIN segments g ON g.space_id = c.space_id AND g.id = c.segment_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id
 ORDER BY c.space_id, c.segment_id, c.run_id DESC;
