-- The search family of the `ranger` schema (current definitions; see sql/README.md): search
-- in SQL, one implementation used by the CLI, by ranger.search(concept, ...) and by anyone
-- with psql or a BI tool. Applied by migrations 0003, 0006, 0007, 0009, 0011, 0016, 0018, 0020,
-- 0021, 0022, 0025, 0027, 0028 and 0036.
--
-- ranger.search_vector ranks windows of one space by cosine similarity to a query vector,
-- under filters on sensor/site/quadrant (p_place, or p_sensors/p_sites/p_quadrants: see
-- ranger._sensor_ids), local time of day (ranges may cross midnight), local dates and absolute
-- time. Strategy:
--   * 'hnsw'  : one statement, HNSW ordering (pgvector >= 0.8 iterative index scan,
--               relaxed order, bounded by hnsw.max_scan_tuples) inside a MATERIALIZED CTE,
--               re-sorted outside, so filtered queries still return k rows;
--   * 'exact' : brute force over the filtered rows only (cosine_distance() is a function call,
--               which the HNSW index cannot serve, so the planner uses the B-tree filters);
--   * 'auto'  : asks the planner how many rows pass the filters (no filter: every row of the
--               space). Under twice exact_limit (default 4,000,000 / dimension: 3,906 rows of
--               1024-d, 20,833 of 192-d) it runs the exact scan capped at exact_limit, which
--               counts the passing rows as it collects them and gives up past the limit
--               (one statement, nothing detoasted before the count is known); at most
--               exact_limit rows, or a filter so selective that the index scan would give up
--               (max_scan_tuples * passing/total < 4 k, or a compact index's candidates):
--               exact, faster and exact; otherwise HNSW, with ef_search from the space's size
--               (see below).
-- HNSW indexes are float32 (vector) or float16 (halfvec), a per-space choice (spaces.index_type,
-- added by 0006): the index-ordered functions order by the expression of the space's own index
-- (ranger._hnsw_distance_sql). Vectors stay stored as float32 in every case: distances and
-- scores returned are exact float32 values, only the candidate order of the index scan comes
-- from float16; the index can be switched back without losing anything. A space's index may
-- also compact (a tenth of halfvec's size): 'bit' (migration 0018), one bit per dimension around
-- the space's mean, Hamming distance; or 'pca' (migration 0021), the window's projection on the
-- space's 32 principal axes, float16, cosine distance. A compact index's scan picks
-- ranger._hnsw_candidates_sql candidates, which are re-ranked by the exact float32 distance.
-- Every user value is a bound parameter (USING); only integers (dimension) are formatted in.

-- The time filters, the one place their rule is written (every ranger search, speech,
-- classifier and analytics function, and soundscape's own queries, call it): local time of day
-- from p_time_from (inclusive) to p_time_to (exclusive), a range that crosses midnight when
-- p_time_from > p_time_to (23:00-01:00); local dates p_date_from..p_date_to (inclusive);
-- instants p_at_from..p_at_to (half-open). A NULL bound does not filter. Local dates and
-- times are those stored with each window (its sensor's timezone at that instant, so DST is
-- already in them). One expression in LANGUAGE sql: the planner inlines it, and with the
-- bounds known (bound parameters) it folds to the plain comparisons, which the indexes serve.
-- Anyone may call it, e.g. SELECT ... FROM ranger.windows w WHERE ranger.in_time_filter(
-- w.local_time, w.local_date, w.starts_at, '23:00', '01:00', NULL, NULL, NULL, NULL).
CREATE OR REPLACE FUNCTION ranger.in_time_filter(
    p_local_time time, p_local_date date, p_starts_at timestamptz,
    p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_time_from IS NOT NULL AND p_time_to IS NOT NULL THEN
                CASE WHEN p_time_from <= p_time_to
                     THEN p_local_time >= p_time_from AND p_local_time < p_time_to
                     ELSE p_local_time >= p_time_from OR p_local_time < p_time_to END
                WHEN p_time_from IS NOT NULL THEN p_local_time >= p_time_from
                WHEN p_time_to IS NOT NULL THEN p_local_time < p_time_to
                ELSE true END
       AND (p_date_from IS NULL OR p_local_date >= p_date_from)
       AND (p_date_to IS NULL OR p_local_date <= p_date_to)
       AND (p_at_from IS NULL OR p_starts_at >= p_at_from)
       AND (p_at_to IS NULL OR p_starts_at < p_at_to)
$$;

-- The sun: NOAA's solar calculator (the equations of NOAA's "General Solar Position
-- Calculations" and its sunrise/sunset spreadsheet, after Meeus' Astronomical Algorithms),
-- mirrored in Python by soundscape.sun (tests/test_sun.py checks that both agree and that they
-- are within 2 minutes of published sunrise and sunset tables).
-- ranger._sun_minutes: when the sun crosses p_zenith (90.833: sunrise/sunset, refraction and
-- the disc's radius included; 96: civil dawn/dusk) rising or setting on date p_date at
-- latitude/longitude p_lat/p_lon, in minutes after 00:00 UTC of p_date (the day that is p_date
-- at the place: at 170 E, sunrise is near -700). 'Infinity': the sun stays below p_zenith all
-- day (polar night), '-Infinity': above it all day (midnight sun). Computed twice: with the
-- sun's position at the place's solar noon, then at the first answer (the declination moves
-- by up to 0.4 degree a day). plpgsql, whose cached expressions make it ~50 times faster
-- than the same arithmetic in nested SQL functions.
CREATE OR REPLACE FUNCTION ranger._sun_minutes(
    p_lat double precision, p_lon double precision, p_date date, p_zenith double precision,
    p_rising boolean
) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v_lat double precision := least(greatest(p_lat, -89.999), 89.999);
    v_at double precision := 720 - 4 * p_lon;
    v_first double precision;
    t double precision; l0 double precision; m double precision; e double precision;
    om double precision; app double precision; eps double precision; y double precision;
    decl double precision; eot double precision; cos_ha double precision;
BEGIN
    FOR i IN 1..2 LOOP
        t := (2451544.5 + (p_date - date '2000-01-01') + v_at / 1440.0 - 2451545.0) / 36525.0;
        l0 := 280.46646 + t * (36000.76983 + t * 0.0003032);
        m := 357.52911 + t * (35999.05029 - 0.0001537 * t);
        e := 0.016708634 - t * (0.000042037 + 0.0000001267 * t);
        om := 125.04 - 1934.136 * t;
        app := l0 + sind(m) * (1.914602 - t * (0.004817 + 0.000014 * t))
               + sind(2 * m) * (0.019993 - 0.000101 * t) + sind(3 * m) * 0.000289
               - 0.00569 - 0.00478 * sind(om);
        eps := 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
               + 0.00256 * cosd(om);
        y := tand(eps / 2) ^ 2;
        decl := asind(sind(eps) * sind(app));
        eot := 4 * degrees(y * sind(2 * l0) - 2 * e * sind(m)
                           + 4 * e * y * sind(m) * cosd(2 * l0)
                           - 0.5 * y * y * sind(4 * l0) - 1.25 * e * e * sind(2 * m));
        cos_ha := cosd(p_zenith) / (cosd(v_lat) * cosd(decl)) - tand(v_lat) * tand(decl);
        IF cos_ha > 1 OR cos_ha < -1 THEN
            -- no crossing: the first pass says so; the second keeps the first's answer
            RETURN coalesce(v_first, CASE WHEN cos_ha > 1 THEN 'Infinity'::double precision
                                          ELSE '-Infinity'::double precision END);
        END IF;
        v_at := 720 - 4 * p_lon - eot + CASE WHEN p_rising THEN -4 ELSE 4 END * acosd(cos_ha);
        v_first := coalesce(v_first, v_at);
    END LOOP;
    RETURN v_at;
END
$fn$;

-- The instant of a sun anchor ('dawn': civil dawn, the sun 6 degrees below the horizon rising;
-- 'sunrise'; 'sunset'; 'dusk': civil dusk) on the local date p_date of a place (latitude,
-- longitude, IANA timezone). On a day without that crossing, a rising anchor is the start of
-- the local day when the sun stays above it all day and the end of the day when it stays
-- below; a setting anchor the opposite (so "sunrise..sunset" is the whole day in the midnight
-- sun and empty in the polar night, "dusk..dawn" the reverse). NULL without coordinates.
CREATE OR REPLACE FUNCTION ranger._sun_at(
    p_lat double precision, p_lon double precision, p_timezone text, p_date date,
    p_anchor text
) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_rising boolean := p_anchor IN ('dawn', 'sunrise');
    v double precision := ranger._sun_minutes(
        p_lat, p_lon, p_date, CASE WHEN p_anchor IN ('sunrise', 'sunset') THEN 90.833 ELSE 96 END,
        v_rising);
BEGIN
    IF v = '-Infinity' AND v_rising OR v = 'Infinity' AND NOT v_rising THEN
        RETURN p_date::timestamp AT TIME ZONE p_timezone;
    ELSIF v IN ('Infinity', '-Infinity') THEN
        RETURN (p_date + 1)::timestamp AT TIME ZONE p_timezone;
    END IF;
    RETURN (p_date::timestamp AT TIME ZONE 'UTC') + v * interval '1 minute';
END
$fn$;

-- When the sun crosses an anchor's height at a place on a date (dawn/dusk: civil twilight,
-- sunrise/sunset): minutes after 00:00 UTC of that date; NULL on a day it does not (polar day
-- or night). Public (readers call it through ranger.windows and sun_times; SECURITY DEFINER
-- runs the internal ranger._sun_minutes as the owner, and keeps it out of inlining).
CREATE OR REPLACE FUNCTION ranger.sun_minutes(
    p_latitude double precision, p_longitude double precision, p_date date, p_anchor text
) RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT nullif(nullif(ranger._sun_minutes(
               p_latitude, p_longitude, p_date,
               CASE WHEN p_anchor IN ('dawn', 'dusk') THEN 96 ELSE 90.833 END,
               p_anchor IN ('dawn', 'sunrise')), 'Infinity'), '-Infinity')
$$;

-- The sun's times on a local date at a place, for anyone (NULL: no such crossing that day,
-- polar day or night): civil dawn, sunrise, sunset, civil dusk. SECURITY DEFINER: readers
-- may not call the underscored helpers themselves. (p_timezone is unused: the local date is
-- the place's own; kept so that a call names the place as the sensors' view does.)
CREATE OR REPLACE FUNCTION ranger.sun_times(
    p_latitude double precision, p_longitude double precision, p_timezone text, p_date date
) RETURNS TABLE (dawn timestamptz, sunrise timestamptz, sunset timestamptz, dusk timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT (p_date::timestamp AT TIME ZONE 'UTC')
               + ranger.sun_minutes(p_latitude, p_longitude, p_date, 'dawn') * interval '1 minute',
           (p_date::timestamp AT TIME ZONE 'UTC')
               + ranger.sun_minutes(p_latitude, p_longitude, p_date, 'sunrise')
               * interval '1 minute',
           (p_date::timestamp AT TIME ZONE 'UTC')
               + ranger.sun_minutes(p_latitude, p_longitude, p_date, 'sunset')
               * interval '1 minute',
           (p_date::timestamp AT TIME ZONE 'UTC')
               + ranger.sun_minutes(p_latitude, p_longitude, p_date, 'dusk') * interval '1 minute'
$$;

-- A sun filter (text) as its period: from anchor a plus a_min minutes to anchor b plus b_min
-- minutes, b on the next day when it comes before a in a day (next_day: "dusk..dawn"). The
-- filter is a word (dawn: dawn-30m..sunrise+1h, sunrise: sunrise-30m..sunrise+30m, day:
-- sunrise..sunset, sunset: sunset-30m..sunset+30m, dusk: sunset-1h..dusk+30m, night:
-- dusk..dawn) or a range of anchors with offsets ("sunrise-30m..sunrise+2h", "sunset..+3h"
-- is not: each end names its anchor; offsets in h and/or m, e.g. +1h30m). soundscape.sun
-- parses the same language; a bad filter is an error (22023) saying what to write.
CREATE OR REPLACE FUNCTION ranger._sun_spec(
    p_sun text, OUT a text, OUT a_min integer, OUT b text, OUT b_min integer,
    OUT next_day boolean
)
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v text := lower(regexp_replace(coalesce(p_sun, ''), '\s+', '', 'g'));
    -- each end: 1 anchor, 3 sign, 5 hours, 7 minutes (8 groups; the second end's from 9)
    v_end text := '(dawn|sunrise|sunset|dusk)(([+-])((\d+)h)?((\d+)(min|m))?)?';
    v_m text[];
    v_order text[] := ARRAY['dawn', 'sunrise', 'sunset', 'dusk'];
BEGIN
    v := CASE v WHEN 'dawn' THEN 'dawn-30m..sunrise+1h'
                WHEN 'sunrise' THEN 'sunrise-30m..sunrise+30m'
                WHEN 'day' THEN 'sunrise..sunset'
                WHEN 'sunset' THEN 'sunset-30m..sunset+30m'
                WHEN 'dusk' THEN 'sunset-1h..dusk+30m'
                WHEN 'night' THEN 'dusk..dawn'
                ELSE v END;
    v_m := regexp_match(v, '^' || v_end || '\.\.' || v_end || '$');
    IF v_m IS NULL OR (v_m[3] IS NOT NULL AND v_m[5] IS NULL AND v_m[7] IS NULL)
       OR (v_m[11] IS NOT NULL AND v_m[13] IS NULL AND v_m[15] IS NULL) THEN
        RAISE EXCEPTION 'bad sun filter %: give a word (dawn, sunrise, day, sunset, dusk, '
            'night) or a range of dawn/sunrise/sunset/dusk with offsets, e.g. '
            '"sunrise-30m..sunrise+2h"', quote_literal(coalesce(p_sun, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    a := v_m[1];
    a_min := CASE WHEN v_m[3] = '-' THEN -1 ELSE 1 END
             * (coalesce(v_m[5]::integer, 0) * 60 + coalesce(v_m[7]::integer, 0));
    b := v_m[9];
    b_min := CASE WHEN v_m[11] = '-' THEN -1 ELSE 1 END
             * (coalesce(v_m[13]::integer, 0) * 60 + coalesce(v_m[15]::integer, 0));
    next_day := (array_position(v_order, b), b_min) <= (array_position(v_order, a), a_min);
END
$fn$;

-- The sun filter's periods at each sensor: element [sensor id] of the array is the instants
-- (a multirange) during which the sun filter p_sun holds at that sensor, for every local date
-- from its first recording to its last (within p_date_from - 1 .. p_date_to + 1 when given),
-- the sensors in p_sensor_ids (NULL: all). A sensor with recordings but no coordinates is an
-- error saying how to give them. Computed once per query (the callers put it in an
-- uncorrelated subquery), so a window's test is one lookup in a multirange.
CREATE OR REPLACE FUNCTION ranger.sun_periods(
    p_sun text, p_sensor_ids integer[] DEFAULT NULL, p_date_from date DEFAULT NULL,
    p_date_to date DEFAULT NULL
) RETURNS tstzmultirange[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    v_spec record := ranger._sun_spec(p_sun);
    v_missing text;
    v_out tstzmultirange[] := '{}';
    v_row record;
BEGIN
    SELECT string_agg(s.name, ', ' ORDER BY s.name) INTO v_missing
      FROM sensors s
     WHERE (p_sensor_ids IS NULL OR s.id = ANY (p_sensor_ids))
       AND (s.latitude IS NULL OR s.longitude IS NULL)
       AND EXISTS (SELECT 1 FROM recordings rec WHERE rec.sensor_id = s.id);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'the sun filter needs each sensor''s latitude and longitude; % has '
            'none: give them (soundscape sensors add NAME --lat .. --lon .. --update) or leave '
            'the sensor out with a place filter', v_missing
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_row IN
        SELECT s.id, range_agg(tstzrange(p.t0, p.t1)) AS periods
          FROM sensors s
          CROSS JOIN LATERAL (
              SELECT (min(rec.started_at) AT TIME ZONE s.timezone)::date - 1 AS d0,
                     (max(rec.started_at + rec.duration_s * interval '1 second')
                         AT TIME ZONE s.timezone)::date + 1 AS d1
                FROM recordings rec WHERE rec.sensor_id = s.id) span
          CROSS JOIN LATERAL generate_series(greatest(span.d0, p_date_from - 1),
                                             least(span.d1, p_date_to + 1),
                                             interval '1 day') d(day)
          CROSS JOIN LATERAL (
              SELECT ranger._sun_at(s.latitude, s.longitude, s.timezone, d.day::date, v_spec.a)
                         + v_spec.a_min * interval '1 minute' AS t0,
                     ranger._sun_at(s.latitude, s.longitude, s.timezone,
                                    d.day::date + v_spec.next_day::integer, v_spec.b)
                         + v_spec.b_min * interval '1 minute' AS t1) p
         WHERE (p_sensor_ids IS NULL OR s.id = ANY (p_sensor_ids))
           AND s.latitude IS NOT NULL AND s.longitude IS NOT NULL AND p.t0 < p.t1
         GROUP BY s.id
    LOOP
        v_out[v_row.id] := v_row.periods;
    END LOOP;
    RETURN v_out;
END
$fn$;

-- The sun filter, the one place its rule is written (like ranger.in_time_filter): a window of
-- sensor p_sensor_id starting at p_starts_at passes when that instant is in the sensor's
-- periods (ranger.sun_periods: p_periods[p_sensor_id]). Callers compute the periods once, in
-- an uncorrelated subquery, e.g. SELECT ... FROM segments g WHERE ranger.in_sun_filter(
-- g.sensor_id, g.starts_at, (SELECT ranger.sun_periods('dawn'))). A window without a known
-- start never passes.
CREATE OR REPLACE FUNCTION ranger.in_sun_filter(
    p_sensor_id integer, p_starts_at timestamptz, p_periods tstzmultirange[]
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_starts_at <@ p_periods[p_sensor_id], false)
$$;

-- The WHERE clause (text, for EXECUTE) of a query on windows `g` under the filters: the
-- space, the sensor ids (ranger._sensor_ids), the time filters (ranger.in_time_filter), and
-- a window left out (p_exclude), the sun filter (p_sun, the key "sun" of the callers' p_place:
-- ranger.in_sun_filter, whose periods are computed once, in an uncorrelated subquery). Positional parameters the
-- caller passes: $2 space, $3 sensor ids, $4 time_from, $5 time_to, $6 date_from, $7 date_to,
-- $8 at_from, $9 at_to, $10 exclude.
CREATE OR REPLACE FUNCTION ranger._filter_sql(
    p_sensor_ids integer[], p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz, p_exclude bigint, p_sun text DEFAULT NULL
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
        CASE WHEN p_exclude IS NOT NULL THEN 'g.id <> $10' END,
        CASE WHEN p_sun IS NOT NULL
             THEN format('ranger.in_sun_filter(g.sensor_id, g.starts_at, '
                         '(SELECT ranger.sun_periods(%L, %s, %s, %s)))',
                         p_sun,
                         CASE WHEN p_sensor_ids IS NULL THEN 'NULL' ELSE '$3' END,
                         CASE WHEN p_date_from IS NULL THEN 'NULL' ELSE '$6' END,
                         CASE WHEN p_date_to IS NULL THEN 'NULL' ELSE '$7' END) END)
$$;

-- The place filters, the one place their rule is written (every ranger function that filters
-- by place, and soundscape's own queries, call ranger._sensor_ids, which calls this): what each
-- key of a place filter matches on a sensor. A place filter is a jsonb object of lists
-- (p_place: {"sites": ["Forest"], "quadrants": ["N", "E"]}); a sensor passes when, for every
-- key given, its value here is one of the key's list (text comparison; a NULL never passes).
-- A new place filter is one more pair here, e.g. a recorder model kept in the sensors'
-- metadata: 'models', s.metadata ->> 'model'.
-- STABLE as jsonb_build_object is, so that the planner inlines it into the query calling it.
CREATE OR REPLACE FUNCTION ranger._place_of(s public.sensors) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('sensors', s.name, 'sites', s.site, 'quadrants', s.quadrant)
$$;

-- Every sensor's id and place (ranger._place_of). The sensors are read first (as rows of type
-- sensors) and placed outside any table scan: on Citus, sensors is a reference table, and a
-- statement that reads it runs on the coordinator's own shard, whose rows are of the shard's
-- type, for which there is no _place_of.
CREATE OR REPLACE FUNCTION ranger._places() RETURNS TABLE (id integer, place jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    v_rows sensors[] := ARRAY(SELECT ROW(s.*)::sensors FROM sensors s);
BEGIN
    RETURN QUERY SELECT r.id, ranger._place_of(r) FROM unnest(v_rows) r;
END
$fn$;

-- The ids of the sensors that pass a place filter (NULL: no place filter, every sensor; an
-- empty array: none passes). The filter is p_place with the p_sensors/p_sites/p_quadrants
-- arguments of the public functions merged in (the same keys). A key ranger._place_of does
-- not know, a key given both ways or a value that is not a list of names is an error (22023)
-- saying what to give. Its key "sun" is the sun filter, checked here and applied to windows by
-- ranger._filter_sql (ranger.in_sun_filter).
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
        -- "sun" is the sun filter (ranger._filter_sql), not a place: checked here, not used
        IF p_place ? 'sun' THEN
            IF jsonb_typeof(p_place -> 'sun') NOT IN ('string', 'null') THEN
                RAISE EXCEPTION 'p_place: sun must be a text, e.g. {"sun": "dawn"}, not %',
                    p_place -> 'sun' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM ranger._sun_spec(p_place ->> 'sun') WHERE p_place ->> 'sun' IS NOT NULL;
            p_place := p_place - 'sun';
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

-- Input checks shared by the search and analytics functions, so that a bad argument gives a
-- message naming the parameter and its allowed range (not "integer out of range" from deep
-- inside, nor NaN scores). The limits: k (results or neighbours) 1..10,000 (the CLI's own
-- --limit bound; HNSW candidate lists stop at 1,000 anyway); exact-scan limits
-- 0..100,000,000 windows; ef_search 1..1,000 (pgvector's own range for hnsw.ef_search).
-- ranger._check_int raises unless p_value is within p_min..p_max (NULL passes when
-- p_nullable: the parameter's default is then used).
CREATE OR REPLACE FUNCTION ranger._check_int(
    p_name text, p_value bigint, p_min bigint, p_max bigint, p_nullable boolean DEFAULT false
) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_value IS NULL AND p_nullable THEN
        RETURN;
    END IF;
    IF p_value IS NULL OR p_value < p_min OR p_value > p_max THEN
        RAISE EXCEPTION '%', format('%s must be between %s and %s%s, not %s', p_name, p_min,
                p_max, CASE WHEN p_nullable THEN ' (or NULL for the default)' ELSE '' END,
                coalesce(p_value::text, 'NULL'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- A query vector must be given and have a direction: the cosine similarity to a zero vector is
-- undefined (pgvector returns NaN). pgvector itself refuses NaN and infinite elements.
CREATE OR REPLACE FUNCTION ranger._check_query(p_name text, p_vector vector) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF p_vector IS NULL THEN
        RAISE EXCEPTION '% (a query vector) is NULL', p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (vector_norm(p_vector) > 0) THEN
        RAISE EXCEPTION '% is a zero vector: its cosine similarity to anything is undefined',
            p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- The expression an HNSW index of a space is built on and a query must ORDER BY to use it:
-- cosine distance between the window's embedding and p_vec, both cast to the index's type.
-- (soundscape.spaces.create_hnsw_index builds the index on the same expression.)
-- p_index is the space's index key (ranger._index_key): 'vector', 'halfvec', or for the
-- compact indexes (ranger._compact):
--   'bit:<space id>': the Hamming distance between the bits of both, given by the space's
--       IMMUTABLE SQL function public.segments_space_<id>_bits (its centre is a constant
--       inside; PostgreSQL inlines it in the index expression and in the query alike);
--   'pca:<space id>': the cosine distance between the projections of both on the space's
--       32 principal axes (fewer in a space of fewer dimensions), as float16, given by the
--       space's IMMUTABLE plpgsql function public.segments_space_<id>_pca (mean and axes are
--       constants inside; plpgsql is never inlined, so the planner matches the call itself
--       and the query's plan does not parse the function's 32 constant vectors).
-- A compact index only picks candidates: the callers take ranger._hnsw_candidates_sql of them
-- and re-rank those by the exact float32 distance.
CREATE OR REPLACE FUNCTION ranger._hnsw_distance_sql(p_dim integer, p_index text, p_vec text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_index IN ('vector', 'halfvec')
                THEN format('g.embedding::%1$s(%2$s) <=> (%3$s)::%1$s(%2$s)', p_index, p_dim, p_vec)
                WHEN p_index ~ '^bit:[0-9]+$'
                THEN format('public.segments_space_%1$s_bits(g.embedding::vector(%2$s))::bit(%4$s) '
                            '<~> public.segments_space_%1$s_bits((%3$s)::vector(%2$s))::bit(%4$s)',
                            substr(p_index, 5)::integer, p_dim, p_vec,
                            -- the bits: above 512 dimensions the two halves are added first
                            -- (soundscape.spaces.bit_length)
                            CASE WHEN p_dim > 512 AND p_dim % 2 = 0 THEN p_dim / 2 ELSE p_dim END)
                WHEN p_index ~ '^pca:[0-9]+$'
                THEN format('public.segments_space_%1$s_pca(g.embedding::vector(%2$s))::halfvec(%4$s) '
                            '<=> public.segments_space_%1$s_pca((%3$s)::vector(%2$s))::halfvec(%4$s)',
                            substr(p_index, 5)::integer, p_dim, p_vec,
                            least(32, p_dim))  -- soundscape.spaces.PCA_DIMS
           END
$$;

-- Whether an index key is a compact index's, whose order only picks candidates to re-rank.
CREATE OR REPLACE FUNCTION ranger._compact(p_index text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_index ~ '^(bit|pca):'
$$;

-- The index key of a space for the statement builders: its index type, and for a compact
-- index also the space (whose function gives the bits or the projection): 'bit:<space id>',
-- 'pca:<space id>'.
CREATE OR REPLACE FUNCTION ranger._index_key(p_space integer, p_index_type text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_index_type IN ('bit', 'pca') THEN p_index_type || ':' || p_space
                ELSE p_index_type END
$$;

-- Candidates per result that a compact index's scan takes before the float32 re-ranking, as an
-- SQL expression (read when the statement runs): 80 for a bit index (spaces.BIT_CANDIDATES)
-- and 60 for a pca index (spaces.PCA_CANDIDATES), where recall@10 against the exact order
-- passes 0.95 on the realistic benchmark set (docs/benchmarks.md), unless the setting
-- soundscape.bit_candidates or soundscape.pca_candidates gives another.
CREATE OR REPLACE FUNCTION ranger._candidates_factor_sql(p_index text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('coalesce(nullif(current_setting(%L, true), %L)::integer, %s)',
                  'soundscape.' || split_part(p_index, ':', 1) || '_candidates', '',
                  CASE WHEN p_index LIKE 'bit:%' THEN 80 ELSE 60 END)
$$;

-- How many rows an index-ordered scan takes for p_k (an SQL expression) results: p_k, or for
-- a compact index the factor above x p_k and at least hnsw.ef_search candidates, re-ranked
-- afterwards by the exact float32 distance.
CREATE OR REPLACE FUNCTION ranger._hnsw_candidates_sql(p_index text, p_k text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN ranger._compact(p_index)
                THEN format('greatest(%s * (%s), current_setting(%L)::integer)',
                            ranger._candidates_factor_sql(p_index), p_k, 'hnsw.ef_search')
                ELSE p_k END
$$;

-- How many passing windows auto ranks by an exact scan rather than through the index, for
-- vectors of p_dim dimensions: as many as an exact scan reads within auto's latency budget,
-- 10M float dimensions (9,765 windows of 1024-d, 52,083 of 192-d). An exact answer is never
-- wrong, and below this size it is fast enough: 10,000 BirdNET windows took 30 ms p95 on a
-- quiet 2-core machine (the 1 % filter of 1M windows, docs/benchmarks.md), and the scan's
-- cost grows with rows x dimension (bench/exact_crossover.py). The setting
-- soundscape.exact_budget overrides the budget (float dimensions; 0 leaves the floor of 1,000
-- windows).
CREATE OR REPLACE FUNCTION ranger._exact_limit(p_dim integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT greatest(1000, coalesce(nullif(current_setting('soundscape.exact_budget', true), '')::bigint,
                                   10000000) / greatest(p_dim, 1))::integer
$$;

-- The ef_search of an index scan (pgvector's candidate list at each step) for p_k results, in
-- a space of p_total windows of which the planner expects p_estimate to pass the filter;
-- p_factor: a compact index's candidates per result (NULL for halfvec and vector).
-- It grows with the space, sqrt(rows / 2.5) from EF_MIN to 400 (rows: the planner's count, or
-- its estimate of the passing rows if that is more, as before a first ANALYZE), because the
-- graph's paths get longer (realistic 1024-d windows, recall@10: 0.97-0.98 with 400 at 1M,
-- where 100 gave 0.87-0.93); with k (2k) and with the filter's selectivity
-- (4 / selectivity); up to 1000. A compact index takes at least ef_search candidates
-- (ranger._hnsw_candidates_sql): its factor x k, times 1 + the passing fraction, since a
-- broader filter leaves more windows near the query for the coarse distance to confuse.
-- A space whose index measured badly (its recall guard, ranger.index_recall) gets at least the
-- ef its check found to reach the recall wanted. The floor, 100 (40 before issue 22), comes
-- from real audio: long stationary backgrounds fill the graph with near-identical windows, and
-- on 10,488 real BirdNET windows ef 10-40 left queries at recall@10 0.7 where 100 gave 0.9
-- (docs/benchmarks.md).
CREATE OR REPLACE FUNCTION ranger._ef_search(
    p_total double precision, p_estimate double precision, p_k integer, p_factor integer
) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(1000, greatest(
        least(400, greatest(100, ceil(sqrt(greatest(p_total, p_estimate) / 2.5)))),
        2 * p_k,
        ceil(4 * p_total / greatest(p_estimate, 1)),
        coalesce(ceil(p_factor * p_k * (1 + least(1, p_estimate / greatest(p_total, 1)))), 0)
    ))::integer
$$;

-- Whether `segments` is a Citus distributed table (this is a Citus coordinator): then a few
-- statement shapes one server runs are refused (docs/scaling.md), and the callers take
-- another. The catalog is read dynamically: it exists only where Citus is installed.
CREATE OR REPLACE FUNCTION ranger._segments_distributed() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    v_distributed boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition '
                'WHERE logicalrelid = ''segments''::regclass)' INTO v_distributed;
    END IF;
    RETURN v_distributed;
END
$fn$;

-- Rows in a space: the planner's counts (kept by autovacuum/ANALYZE) of the leaf tables of
-- its partition, whatever the partition's own layout.
CREATE OR REPLACE FUNCTION ranger._space_rows(p_space integer) RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::double precision
      FROM pg_partition_tree(to_regclass('segments_space_' || p_space)) t
      JOIN pg_class c ON c.oid = t.relid
     WHERE t.isleaf
$$;

-- The ranking statement of ranger.search_vector, for a space of dimension p_dim (EXPLAIN it
-- with PREPARE: parameters $1 query vector, $2 space, $3 sensor ids, $4/$5 time of day,
-- $6/$7 local dates, $8/$9 instants, $10 excluded window, $11 k, $12 min score; p_method
-- 'capped' also takes $13, the cap).
--   'hnsw'  : HNSW ordering inside a MATERIALIZED CTE, re-sorted outside;
--   'exact' : cosine_distance() over every passing row (a function call, which the HNSW index
--             cannot serve, so the planner uses the B-tree filters);
--   'capped': the exact scan of at most $13 passing rows. The passing rows are collected first
--             (without their vectors, so nothing is detoasted yet) and stop at $13 + 1; if more
--             pass, the statement returns one row whose method is 'too many' instead (and
--             computed no distance). The count and the exact scan in one pass: what the search
--             used to do with a separate bounded count followed by the exact scan.
CREATE OR REPLACE FUNCTION ranger._search_vector_sql(
    p_dim integer, p_where text, p_method text, p_index text
)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_method = 'capped' THEN format(
        'WITH f AS MATERIALIZED (
             SELECT g.id, g.recording_id, g.sensor_id, g.start_s, g.end_s, g.starts_at,
                    g.local_date, g.local_time, g.embedding
               FROM segments g
              WHERE %2$s
              LIMIT $13 + 1),
         n AS (SELECT count(*) AS n FROM f),
         hits AS MATERIALIZED (
             SELECT f.*, cosine_distance(f.embedding::vector(%1$s), $1::vector(%1$s)) AS distance
               FROM f
              WHERE (SELECT n.n FROM n) <= $13
              ORDER BY distance, f.id
              LIMIT $11)
         (SELECT h.id, (1 - h.distance)::real, h.recording_id, r.path, s.name, s.site,
                 s.quadrant, h.start_s, h.end_s, h.starts_at, h.local_date, h.local_time,
                 NULL::text, ''exact''::text
            FROM hits h
            JOIN recordings r ON r.id = h.recording_id
            JOIN sensors s ON s.id = h.sensor_id
           WHERE $12::real IS NULL OR 1 - h.distance >= $12
           ORDER BY h.distance, h.id)
         UNION ALL
         SELECT NULL::bigint, NULL::real, NULL::bigint, NULL::text, NULL::text, NULL::text,
                NULL::text, NULL::real, NULL::real, NULL::timestamptz, NULL::date, NULL::time,
                NULL::text, ''too many''::text
           FROM n
          WHERE n.n > $13',
        p_dim, p_where)
    ELSE format(
        'WITH %6$s hits AS MATERIALIZED (
             SELECT g.id, g.recording_id, g.sensor_id, g.start_s, g.end_s, g.starts_at,
                    g.local_date, g.local_time, %3$s AS distance
               FROM %7$s g
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
        p_dim,
        -- a compact index: the filters apply to the candidates' index scan (below), not again
        CASE WHEN p_method = 'hnsw' AND ranger._compact(p_index) THEN 'true' ELSE p_where END,
        -- the distance reported is always the exact float32 one; exact: cosine_distance() is a
        -- function call the HNSW index cannot serve
        CASE WHEN p_method = 'hnsw'
             THEN format('g.embedding::vector(%1$s) <=> $1::vector(%1$s)', p_dim)
             ELSE format('cosine_distance(g.embedding::vector(%1$s), $1::vector(%1$s))', p_dim) END,
        CASE WHEN p_method = 'hnsw' AND ranger._compact(p_index) THEN '9, g.id'
             WHEN p_method = 'hnsw'
             THEN ranger._hnsw_distance_sql(p_dim, p_index, '$1')
             ELSE '9, g.id' END,
        p_method,
        -- a compact index: its order picks the candidates (with their vectors), which `hits`
        -- re-ranks by the exact float32 distance
        CASE WHEN p_method = 'hnsw' AND ranger._compact(p_index) THEN format(
            'cand AS MATERIALIZED (
                 SELECT g.id, g.recording_id, g.sensor_id, g.start_s, g.end_s, g.starts_at,
                        g.local_date, g.local_time, g.embedding
                   FROM segments g
                  WHERE %s
                  ORDER BY %s
                  LIMIT %s),',
            p_where, ranger._hnsw_distance_sql(p_dim, p_index, '$1'),
            ranger._hnsw_candidates_sql(p_index, '$11')) ELSE '' END,
        CASE WHEN p_method = 'hnsw' AND ranger._compact(p_index) THEN 'cand' ELSE 'segments' END) END
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
                                  p_at_from, p_at_to, p_exclude, p_place ->> 'sun');

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


-- BirdNET's week of the year for a local date: its 48-week year, four weeks per month (days
-- 1-7 week 1, 8-14 week 2, 15-21 week 3, 22 to the month's end week 4), as BirdNET-Analyzer's
-- --week; -1 (its "whole year") for an unknown date.
CREATE OR REPLACE FUNCTION ranger.birdnet_week(p_date date) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_date IS NULL THEN -1
                ELSE (extract(month FROM p_date)::integer - 1) * 4
                     + least(4, (extract(day FROM p_date)::integer - 1) / 7 + 1) END
$$;

-- Label search for classifier spaces (BirdNET): windows ranked by their stored class score
-- for any of the given labels (the best one names the hit). Unless p_all_species, a class
-- that BirdNET's occurrence model finds implausible at the window's sensor and week (tables
-- occurrence_sensors/occurrence of migration 0011, see sql/species.sql) does not count:
-- sensors without an occurrence list (no coordinates) and non-species classes (stored with a
-- NULL probability) are never filtered.
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
                                  p_at_from, p_at_to, NULL, p_place ->> 'sun');
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

-- Named, stored queries ("concepts") that people without Python can use. Filter parameters
-- are *_name because the result columns are called sensor, site and quadrant.
CREATE OR REPLACE FUNCTION ranger.search(
    concept text,
    k integer DEFAULT 10,
    sensor_name text DEFAULT NULL,
    site_name text DEFAULT NULL,
    quadrant_name text DEFAULT NULL,
    time_from time DEFAULT NULL,
    time_to time DEFAULT NULL,
    date_from date DEFAULT NULL,
    date_to date DEFAULT NULL,
    place jsonb DEFAULT NULL
) RETURNS TABLE (
    segment_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, label text, method text
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    c concepts%ROWTYPE;
BEGIN
    PERFORM ranger._check_int('k (the number of results)', k, 1, 10000);
    SELECT * INTO c FROM concepts WHERE name = concept;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no concept named %; see SELECT name FROM ranger.concepts', concept;
    END IF;
    IF c.label_ids IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ranger.search_labels(
            c.space_id, c.label_ids, k,
            CASE WHEN sensor_name IS NULL THEN NULL ELSE ARRAY[sensor_name] END,
            CASE WHEN site_name IS NULL THEN NULL ELSE ARRAY[site_name] END,
            CASE WHEN quadrant_name IS NULL THEN NULL ELSE ARRAY[quadrant_name] END,
            time_from, time_to, date_from, date_to, NULL, NULL, c.threshold,
            p_place => place);
    ELSE
        RETURN QUERY SELECT * FROM ranger.search_vector(
            c.space_id, c.embedding, k,
            CASE WHEN sensor_name IS NULL THEN NULL ELSE ARRAY[sensor_name] END,
            CASE WHEN site_name IS NULL THEN NULL ELSE ARRAY[site_name] END,
            CASE WHEN quadrant_name IS NULL THEN NULL ELSE ARRAY[quadrant_name] END,
            time_from, time_to, date_from, date_to, NULL, NULL, c.threshold,
            p_place => place);
    END IF;
END
$fn$;

-- (Re)compute the stored detections of one concept, of all its windows or (p_recording) of one
-- recording's: windows whose score passes the concept's threshold. Vector concepts need a
-- threshold; label concepts default to 0.5, and leave out classes BirdNET's occurrence model
-- finds implausible at the window's sensor and week, as search_labels and species_daily do. A
-- vector concept with a zero embedding is an error (every score would be NaN, and NaN >=
-- threshold). The one rule of a detection: refresh_detections (a concept, or all) and
-- refresh_recording_detections (ingest, backfill and the worker call it for each recording
-- they store, in the same transaction) run it.
CREATE OR REPLACE FUNCTION ranger._detect_concept(p_concept integer, p_recording bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $fn$
DECLARE
    c concepts%ROWTYPE;
    v_model text;
    v_dim integer;
    v_rec text;
    v_rows bigint := 0;
BEGIN
    SELECT * INTO c FROM concepts WHERE id = p_concept;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- one recording's windows: a condition of its own in each statement (dynamic SQL), so that
    -- the plan walks that recording's windows (segments_recording_idx, then the primary key of
    -- segment_scores) instead of every score of the concept's classes
    v_rec := CASE WHEN p_recording IS NULL THEN ''
                  ELSE format(' AND g.recording_id = %s', p_recording) END;
    IF p_recording IS NULL THEN
        DELETE FROM detections WHERE concept_id = c.id;
    ELSE
        DELETE FROM detections d USING segments g
         WHERE d.concept_id = c.id AND g.space_id = d.space_id AND g.id = d.segment_id
           AND g.space_id = c.space_id AND g.recording_id = p_recording;
    END IF;
    SELECT sp.model INTO v_model FROM spaces sp WHERE sp.id = c.space_id;
    IF c.label_ids IS NOT NULL
       AND EXISTS (SELECT 1 FROM occurrence_sensors os WHERE os.model = v_model) THEN
        -- the rule of search_labels and species_daily: a class BirdNET's occurrence model
        -- finds implausible at the window's sensor and week is no detection (sensors
        -- without a list and non-species classes are never filtered)
        EXECUTE format(
            'INSERT INTO detections (concept_id, space_id, segment_id, score)
             SELECT $1, $2, sc.segment_id, max(sc.score)
               FROM segment_scores sc
               JOIN segments g ON g.space_id = sc.space_id AND g.id = sc.segment_id
              WHERE sc.space_id = $2 AND sc.label_id = ANY($3) AND sc.score >= $4%s
                AND (NOT EXISTS (SELECT 1 FROM occurrence_sensors os
                                  WHERE os.model = $5 AND os.sensor_id = g.sensor_id)
                     OR EXISTS (SELECT 1 FROM occurrence o
                                 WHERE o.model = $5 AND o.sensor_id = g.sensor_id
                                   AND o.week = ranger.birdnet_week(g.local_date)
                                   AND o.label_id = sc.label_id))
              GROUP BY sc.segment_id', v_rec)
        USING c.id, c.space_id, c.label_ids, coalesce(c.threshold, 0.5), v_model;
    ELSIF c.label_ids IS NOT NULL THEN
        EXECUTE format(
            'INSERT INTO detections (concept_id, space_id, segment_id, score)
             SELECT $1, $2, sc.segment_id, max(sc.score)
               FROM segment_scores sc%s
              WHERE sc.space_id = $2 AND sc.label_id = ANY($3) AND sc.score >= $4%s
              GROUP BY sc.segment_id',
            CASE WHEN p_recording IS NULL THEN ''
                 ELSE ' JOIN segments g ON g.space_id = sc.space_id AND g.id = sc.segment_id' END,
            v_rec)
        USING c.id, c.space_id, c.label_ids, coalesce(c.threshold, 0.5);
    ELSIF c.threshold IS NOT NULL THEN
        PERFORM ranger._check_query(format('the embedding of concept %s', c.name), c.embedding);
        SELECT dimension INTO v_dim FROM spaces WHERE id = c.space_id;
        EXECUTE format(
            'INSERT INTO detections (concept_id, space_id, segment_id, score)
             SELECT $1, $2, g.id, 1 - cosine_distance(g.embedding::vector(%1$s), $3::vector(%1$s))
               FROM segments g
              WHERE g.space_id = $2%2$s
                AND 1 - cosine_distance(g.embedding::vector(%1$s), $3::vector(%1$s)) >= $4',
            v_dim, v_rec)
        USING c.id, c.space_id, c.embedding, c.threshold;
    END IF;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END
$fn$;

-- Every window of the named concept (all concepts when NULL), computed afresh; returns the
-- number of detections written.
CREATE OR REPLACE FUNCTION ranger.refresh_detections(p_concept text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_id integer;
    v_n bigint := 0;
BEGIN
    FOR v_id IN SELECT id FROM concepts WHERE p_concept IS NULL OR name = p_concept LOOP
        v_n := v_n + ranger._detect_concept(v_id, NULL);
        UPDATE concepts SET refreshed_at = now() WHERE id = v_id;
    END LOOP;
    RETURN v_n;
END
$fn$;

-- The detections of every concept in one recording's windows (its new or replaced windows:
-- ingest, backfill and the worker call it before they commit the recording), so a concept's
-- detections follow new audio without a full refresh; returns the number written.
CREATE OR REPLACE FUNCTION ranger.refresh_recording_detections(p_recording bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_id integer;
    v_n bigint := 0;
BEGIN
    FOR v_id IN SELECT c.id FROM concepts c
                 WHERE EXISTS (SELECT 1 FROM recording_spaces rs
                                WHERE rs.recording_id = p_recording AND rs.space_id = c.space_id)
                 ORDER BY c.id LOOP
        v_n := v_n + ranger._detect_concept(v_id, p_recording);
    END LOOP;
    RETURN v_n;
END
$fn$;

-- detections counted in a join, not a correlated subquery (which Citus cannot run when the
-- FROM clause holds a reference table; the same rows and types on one server)
CREATE OR REPLACE VIEW ranger.concepts AS
SELECT c.name, sp.name AS space, c.kind, c.query, c.threshold,
       cardinality(c.label_ids) AS n_labels, c.created_at, c.refreshed_at,
       coalesce(d.n, 0) AS detections
  FROM concepts c JOIN spaces sp ON sp.id = c.space_id
  LEFT JOIN (SELECT concept_id, count(*) AS n FROM detections GROUP BY concept_id) d
         ON d.concept_id = c.id;

-- ranger.detections and ranger.activity_by_hour (concept and classifier detections) live in
-- classifiers.sql: they read the classifier tables of migration 0009.

CREATE OR REPLACE VIEW ranger.sensors AS
SELECT name AS sensor, site, quadrant, latitude, longitude, timezone, metadata
  FROM sensors;

-- Every window with its place and local time (no vectors): the table to filter in a BI tool.
-- minutes_from_sunrise / minutes_from_sunset: the window's start minus the sunrise / sunset of
-- its local date at its sensor (ranger.sun_times; negative before it; NULL without coordinates
-- or on a day without one); computed only when read (about 0.1 ms a window: filter first).
-- The sun filter itself is ranger.in_sun_filter.
CREATE OR REPLACE VIEW ranger.windows AS
SELECT g.id AS segment_id, sp.name AS space, g.recording_id, s.name AS sensor, s.site,
       s.quadrant, g.local_date, g.local_time, g.starts_at, r.path, g.start_s, g.end_s,
       -- scalar expressions (as ranger.sun_times computes them), not a table function: on
       -- Citus a multi-shard query may only use immutable functions as table expressions
       (extract(epoch FROM g.starts_at - (g.local_date::timestamp AT TIME ZONE 'UTC')) / 60
        - ranger.sun_minutes(s.latitude, s.longitude, g.local_date, 'sunrise'))::real
           AS minutes_from_sunrise,
       (extract(epoch FROM g.starts_at - (g.local_date::timestamp AT TIME ZONE 'UTC')) / 60
        - ranger.sun_minutes(s.latitude, s.longitude, g.local_date, 'sunset'))::real
           AS minutes_from_sunset
  FROM segments g
  JOIN spaces sp ON sp.id = g.space_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id;
REVOKE EXECUTE ON FUNCTION ranger.refresh_detections(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ranger.refresh_recording_detections(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ranger._detect_concept(integer, bigint) FROM PUBLIC;
