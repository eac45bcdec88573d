-- Frozen copy (sql/README.md): what migration 0035's downgrade restores. ranger.search_speech
-- and the view ranger.utterances as sql/speech.sql defined them before 0035 (0028's bodies):
-- no phonetic route, no match/matched/speaker columns, no p_speaker argument.
SET LOCAL check_function_bodies = off;

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
    p_place jsonb DEFAULT NULL
) RETURNS TABLE (
    utterance_id bigint, score real, recording_id bigint, path text, sensor text, site text,
    quadrant text, start_s real, end_s real, starts_at timestamptz, local_date date,
    local_time time, snippet text, text text, language text, model text, method text
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
    -- The fuzzy part runs only when the full text finds fewer than k (with the filters).
    IF p_fuzzy AND v_terms.fuzzy <> '' AND v_tsq IS NOT NULL THEN
        SELECT count(*) < p_k INTO v_need
          FROM (SELECT 1 FROM ranger._speech_filtered(v_ids, p_time_from, p_time_to, p_date_from,
                                                      p_date_to, p_at_from, p_at_to) u
                 WHERE u.tsv @@ v_tsq
                 LIMIT p_k) x;
    END IF;
    IF p_fuzzy AND v_terms.fuzzy <> '' AND v_need THEN
        -- the stored words spelt like the query, one of its words or all of them run together
        FOR v_word IN
            SELECT DISTINCT w.word
              FROM unnest(array_append(string_to_array(v_terms.fuzzy, ' '), v_terms.nospace)) q(term)
              CROSS JOIN LATERAL (SELECT sw.word FROM speech_words sw WHERE sw.word % q.term
                                   ORDER BY similarity(sw.word, q.term) DESC, sw.word
                                   LIMIT 20) w
        LOOP
            v_near := CASE WHEN v_near IS NULL THEN plainto_tsquery('english', v_word)
                           ELSE v_near || plainto_tsquery('english', v_word) END;
        END LOOP;
        IF v_near IS NOT NULL AND numnode(v_near) = 0 THEN
            v_near := NULL;
        END IF;
    END IF;
    RETURN QUERY
    WITH f AS NOT MATERIALIZED (
        SELECT u.* FROM ranger._speech_filtered(v_ids, p_time_from, p_time_to, p_date_from,
                                                p_date_to, p_at_from, p_at_to) u
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
    ), hits AS (
        SELECT ft.id, ft.score, 'fulltext'::text AS method, 0 AS tier FROM ft
        UNION ALL
        SELECT fz.id, fz.score, 'fuzzy'::text, 1 FROM fz
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
           u.text, u.language, t.model || ' ' || t.model_version, h.method
      FROM ranked h
      JOIN utterances u ON u.id = h.id
      JOIN transcripts t ON t.id = u.transcript_id
      JOIN recordings r ON r.id = u.recording_id
      JOIN sensors s ON s.id = u.sensor_id
      LEFT JOIN LATERAL ranger._speech_span(
          u.words, CASE WHEN h.method = 'fulltext' THEN v_terms.lexemes END,
          v_terms.fuzzy) sp ON true
      -- the hit's words (the whole utterance when no span was found) and when they start
      CROSS JOIN LATERAL (
          SELECT coalesce(sp.start_s, u.start_s) AS start_s, coalesce(sp.end_s, u.end_s) AS end_s,
                 u.starts_at + (coalesce(sp.start_s, u.start_s) - u.start_s) * interval '1 second'
                     AS starts_at) w
     ORDER BY h.tier, h.score DESC, u.id;
END
$fn$;

CREATE OR REPLACE VIEW ranger.utterances AS
SELECT u.id AS utterance_id, u.recording_id, r.path, s.name AS sensor, s.site, s.quadrant,
       u.start_s, u.end_s, u.starts_at, u.local_date, u.local_time, u.text, u.words,
       u.language, t.model, t.model_version
  FROM utterances u
  JOIN transcripts t ON t.id = u.transcript_id
  JOIN recordings r ON r.id = u.recording_id
  JOIN sensors s ON s.id = u.sensor_id;
