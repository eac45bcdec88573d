-- The speech family of the `ranger` schema (current definitions; see sql/README.md): what is
-- said, searchable in SQL. Applied by migrations 0012, 0019, 0025, 0027, 0028 and 0035. One
-- implementation for the CLI (`soundscape search --said`), notebooks (soundscape.speech) and BI
-- tools. (The view ranger.utterances lives in sql/utterances.sql since 0035.)
--
-- ranger.search_speech(query, k, filters...) finds utterances (tables of 0012) that pass the
-- filters (ranger._speech_filtered, shared by its paths; p_speaker: only that speaker's) by
--   * full text: websearch_to_tsquery('english', query) on the utterance's tsvector (GIN):
--     words, "quoted phrases", -exclusions, `or`; ranked by ts_rank_cd (normalised to 0..1);
--     match `exact` when a matched word is the query's as said, else `stem`;
--   * then, while fewer than k were found and p_fuzzy, a fuzzy fallback (match `trigram`): the
--     stored words spelt like the query, its words or the query without spaces (so that "bit
--     coin" meets "bitcoin") are looked up in the vocabulary `speech_words` (pg_trgm
--     similarity, trigram GIN index), the utterances holding them found through the tsvector
--     index, and those whose text has a trigram word similarity to the query of at least
--     p_min_similarity are ranked by it. When no stored word is spelt alike, the texts
--     themselves are searched by word similarity (trigram GIN index on the text). Exclusions
--     still apply.
--   * then, while still fewer than k, a phonetic route (match `phonetic`, issue 26): words
--     Whisper doubted (probability < 0.5, ranger._speech_doubtful) that sound like a query word
--     (Double Metaphone, fuzzystrmatch: the same code, or one sound apart for codes of four
--     sounds) are looked up in the vocabulary's doubted words (speech_words.doubtful, codes
--     stored in sound/sound_alt), best first; for each, up to k of the utterances where it was
--     doubted, found through the tsvector index (so a common word's sound costs k rows, not
--     all its utterances); ranked below every full-text and trigram hit ("Voggers" for "voters", "Pouching" for
--     "poaching"). A confident word is never matched by sound: it is another word.
-- Each hit is the span of the matching words, at word precision (from the utterance's words
-- json), with its absolute and local time, a snippet with the match marked **like this**
-- (ts_headline for full-text hits; the matched words otherwise), the matched words as said
-- (`matched`) and the utterance's speaker. Filters as for windows: sensors/sites/quadrants,
-- the local time of day of the utterance's start (a range may cross midnight), local dates and
-- absolute instants, and the sun (the key "sun" of p_place: ranger.in_sun_filter on the
-- periods ranger.sun_periods computes once per call).

-- The query's parts: the positive text (no -exclusions, quotes or `or`), lower case; the same
-- without spaces; the English lexemes of the positive text; the exclusions as a tsquery.
-- Migration 0012 applies this file before search.sql has ranger.in_time_filter (an upgrade
-- from 0011): function bodies are checked when they run, not when they are made.
SET LOCAL check_function_bodies = off;

CREATE OR REPLACE FUNCTION ranger._speech_terms(
    p_query text, OUT fuzzy text, OUT nospace text, OUT lexemes text[], OUT excluded tsquery
)
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v_minus text := '(^|\s)-("[^"]*"|[^\s"]+)';
    v_terms text;
BEGIN
    fuzzy := lower(coalesce(p_query, ''));
    fuzzy := regexp_replace(fuzzy, v_minus, ' ', 'g');
    fuzzy := regexp_replace(fuzzy, '"', ' ', 'g');
    fuzzy := regexp_replace(fuzzy, '(^|\s)or(\s|$)', ' ', 'g');
    fuzzy := btrim(regexp_replace(fuzzy, '\s+', ' ', 'g'));
    nospace := replace(fuzzy, ' ', '');
    lexemes := tsvector_to_array(to_tsvector('english', fuzzy));
    SELECT string_agg('"' || btrim(replace(m[2], '"', ' ')) || '"', ' or ')
      INTO v_terms
      FROM regexp_matches(coalesce(p_query, ''), v_minus, 'g') AS m;
    excluded := CASE WHEN v_terms IS NOT NULL THEN websearch_to_tsquery('english', v_terms) END;
    IF excluded IS NOT NULL AND numnode(excluded) = 0 THEN
        excluded := NULL;
    END IF;
END
$fn$;

-- The words of an utterance that a hit is about: (start_s, end_s, first and last word index).
-- Full text: the shortest run of words that holds every query lexeme the utterance has (a
-- phrase, or a single word). Otherwise (fuzzy): the run of up to n+1 words (n: query words)
-- whose letters, spaces removed, are most similar to the query's. NULLs when nothing fits.
CREATE OR REPLACE FUNCTION ranger._speech_span(p_words jsonb, p_lexemes text[], p_fuzzy text)
RETURNS TABLE (start_s real, end_s real, first_word integer, last_word integer)
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v_idx integer[];
    v_lex text[];
    v_present integer;
    v_seen text[];
    v_best integer;
    v_a integer;
    v_b integer;
    v_n integer := jsonb_array_length(coalesce(p_words, '[]'));
    v_nq integer;
    v_cand text;
    v_sim real;
    v_best_sim real := 0;
    v_nospace text := replace(coalesce(p_fuzzy, ''), ' ', '');
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_lexemes) > 0 THEN
        SELECT array_agg(e.ord - 1 ORDER BY e.ord), array_agg(x.lex ORDER BY e.ord)
          INTO v_idx, v_lex
          FROM jsonb_array_elements(p_words) WITH ORDINALITY AS e(w, ord),
               LATERAL (SELECT l AS lex
                          FROM unnest(tsvector_to_array(to_tsvector('english', e.w ->> 'w'))) l
                         WHERE l = ANY (p_lexemes) LIMIT 1) x;
        IF v_idx IS NOT NULL THEN
            SELECT count(DISTINCT l) INTO v_present FROM unnest(v_lex) l;
            FOR i IN 1 .. cardinality(v_idx) LOOP
                v_seen := '{}';
                FOR j IN i .. cardinality(v_idx) LOOP
                    IF NOT v_lex[j] = ANY (v_seen) THEN
                        v_seen := v_seen || v_lex[j];
                    END IF;
                    IF cardinality(v_seen) = v_present THEN
                        IF v_best IS NULL OR v_idx[j] - v_idx[i] < v_best THEN
                            v_best := v_idx[j] - v_idx[i];
                            v_a := v_idx[i];
                            v_b := v_idx[j];
                        END IF;
                        EXIT;
                    END IF;
                END LOOP;
            END LOOP;
        END IF;
    END IF;
    IF v_a IS NULL AND v_nospace <> '' THEN
        v_nq := length(p_fuzzy) - length(v_nospace) + 1;
        FOR i IN 0 .. v_n - 1 LOOP
            v_cand := '';
            FOR len IN 1 .. v_nq + 1 LOOP
                EXIT WHEN i + len - 1 >= v_n;
                v_cand := v_cand || lower(regexp_replace(p_words -> (i + len - 1) ->> 'w',
                                                         '[^[:alnum:]]', '', 'g'));
                v_sim := similarity(v_cand, v_nospace);
                IF v_sim > v_best_sim THEN
                    v_best_sim := v_sim;
                    v_a := i;
                    v_b := i + len - 1;
                END IF;
            END LOOP;
        END LOOP;
    END IF;
    IF v_a IS NULL THEN
        RETURN;
    END IF;
    start_s := (p_words -> v_a ->> 's')::real;
    end_s := (p_words -> v_b ->> 'e')::real;
    first_word := v_a;
    last_word := v_b;
    RETURN NEXT;
END
$fn$;

-- The utterance's words with those from p_first to p_last (indexes) marked **like this**.
CREATE OR REPLACE FUNCTION ranger._speech_mark(p_words jsonb, p_first integer, p_last integer)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(CASE WHEN e.ord - 1 = p_first AND e.ord - 1 = p_last
                                THEN '**' || (e.w ->> 'w') || '**'
                           WHEN e.ord - 1 = p_first THEN '**' || (e.w ->> 'w')
                           WHEN e.ord - 1 = p_last THEN (e.w ->> 'w') || '**'
                           ELSE e.w ->> 'w' END, ' ' ORDER BY e.ord)
      FROM jsonb_array_elements(p_words) WITH ORDINALITY AS e(w, ord)
$$;

-- A word Whisper itself doubted: its probability (words json "p") below 0.5. The phonetic route
-- matches only such words (a confident word that merely sounds like the query is another word);
-- ingest marks the vocabulary's doubted words with it too (soundscape.speech.add_vocabulary).
CREATE OR REPLACE FUNCTION ranger._speech_doubtful(p_probability real)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_probability < 0.5, false)
$$;

-- The Double Metaphone codes of a query's words (fuzzystrmatch): each positive word of at least
-- three letters, and the words run together when there are several; codes shorter than two
-- sounds are left out (they match half the language).
CREATE OR REPLACE FUNCTION ranger._speech_sounds(p_fuzzy text)
RETURNS TABLE (term text, code text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT t.term, c.code
      FROM (SELECT regexp_replace(x, '[^[:alnum:]]', '', 'g') AS term
              FROM unnest(string_to_array(coalesce(p_fuzzy, ''), ' ')) x
            UNION
            SELECT regexp_replace(p_fuzzy, '[^[:alnum:]]', '', 'g')
             WHERE position(' ' IN coalesce(p_fuzzy, '')) > 0) t
     CROSS JOIN LATERAL (VALUES (dmetaphone(t.term)), (dmetaphone_alt(t.term))) c(code)
     WHERE length(t.term) >= 3 AND length(c.code) >= 2
$$;

-- The codes one sound apart from a Double Metaphone code of four sounds (one substituted by
-- another of the 14 it uses: 0AFHJKLMNPRSTX), with the code itself; a shorter code alone.
-- The phonetic route looks them all up in the doubted words' code indexes (levenshtein over
-- the whole vocabulary cost 50-100 ms at 20,000 doubted words).
CREATE OR REPLACE FUNCTION ranger._speech_near_codes(p_code text)
RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(p_code) <> 4 THEN ARRAY[p_code]
           ELSE ARRAY[p_code] || ARRAY(
               SELECT overlay(p_code PLACING s FROM i FOR 1)
                 FROM generate_series(1, 4) i,
                      regexp_split_to_table('0AFHJKLMNPRSTX', '') s
                WHERE s <> substr(p_code, i, 1)) END
$$;

-- The index of the first word of an utterance that is p_word (lower case, letters and digits)
-- and that Whisper doubted; NULL when it has no such word. The phonetic route's check that a
-- vocabulary word sounding like the query was doubted in this utterance.
CREATE OR REPLACE FUNCTION ranger._speech_doubted(p_words jsonb, p_word text)
RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT (e.ord - 1)::integer
      FROM jsonb_array_elements(p_words) WITH ORDINALITY AS e(w, ord)
     WHERE lower(regexp_replace(e.w ->> 'w', '[^[:alnum:]]', '', 'g')) = p_word
       AND ranger._speech_doubtful((e.w ->> 'p')::real)
     ORDER BY e.ord
     LIMIT 1
$$;

-- The utterances that pass the place and time filters of ranger.search_speech: sensors (ids;
-- NULL: all) and the time filters of the utterance's start (ranger.in_time_filter, the same
-- rule as for windows). One SELECT in LANGUAGE sql, so the planner inlines it into the
-- caller's query (the text indexes still serve it).
CREATE OR REPLACE FUNCTION ranger._speech_filtered(
    p_ids integer[], p_time_from time, p_time_to time, p_date_from date, p_date_to date,
    p_at_from timestamptz, p_at_to timestamptz, p_sun tstzmultirange[] DEFAULT NULL
) RETURNS SETOF public.utterances
LANGUAGE sql STABLE AS $$
    SELECT u.* FROM public.utterances u
     WHERE (p_ids IS NULL OR u.sensor_id = ANY (p_ids))
       AND ranger.in_time_filter(u.local_time, u.local_date, u.starts_at, p_time_from,
                                 p_time_to, p_date_from, p_date_to, p_at_from, p_at_to)
       AND (p_sun IS NULL OR ranger.in_sun_filter(u.sensor_id, u.starts_at, p_sun))
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
    v_sun tstzmultirange[];  -- the sun filter's periods (NULL: no sun filter)
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
    IF p_place ? 'sun' THEN  -- the sun filter's periods, once (ranger.in_sun_filter)
        v_sun := ranger.sun_periods(p_place ->> 'sun', v_ids, p_date_from, p_date_to);
    END IF;
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
                                                      p_date_to, p_at_from, p_at_to, v_sun) u
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
                                                p_date_to, p_at_from, p_at_to, v_sun) u
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

CREATE OR REPLACE VIEW ranger.transcripts AS
SELECT t.id AS transcript_id, t.recording_id, r.path, s.name AS sensor, s.site, s.quadrant,
       t.model, t.model_version, t.speech_s, t.n_utterances, r.duration_s, t.transcribed_at
  FROM transcripts t
  JOIN recordings r ON r.id = t.recording_id
  JOIN sensors s ON s.id = r.sensor_id;
