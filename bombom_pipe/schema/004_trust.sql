-- 004: who sent it. Per-article authentication verdict (DKIM aligned with the From domain,
-- DMARC policy seen); newsletters remember authenticated mail; dedup keys name the sender.

ALTER TABLE articles
    ADD COLUMN auth_verdict        text CHECK (auth_verdict IN ('pass', 'fail', 'none', 'temperror')),
    ADD COLUMN auth_signing_domain text,      -- d= of the valid DKIM signature aligned with From
    ADD COLUMN auth_dmarc_policy   text CHECK (auth_dmarc_policy IN ('none', 'quarantine', 'reject')),
    ADD COLUMN auth_detail         text,      -- what the verdict rests on, for operators
    ADD COLUMN content_sha256      text;      -- subject, From, bodies, attachments: see store.py

ALTER TABLE newsletters
    ADD COLUMN authenticated_at    timestamptz;  -- latest authenticated mail; NULL: never

-- The upsert sets it: every role that may UPDATE the upserted columns (003) may UPDATE it too,
-- so deliveries keep working before `bombom init-db` grants NEWSLETTER_UPSERT_COLUMNS again.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_attribute t, aclexplode(t.attacl) a
        WHERE t.attrelid = 'newsletters'::regclass AND t.attname = 'last_seen_at'
          AND a.privilege_type = 'UPDATE' AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT UPDATE (authenticated_at) ON newsletters TO %s', grantee);
    END LOOP;
END
$$;

-- Keys named the Message-ID alone (or 'sha256:<raw>'); now '<sender> <Message-ID>'. Articles
-- stored before this were not authenticated, so their sender is the From address.
UPDATE articles SET dedup_key = 'from:' || coalesce(left(from_address, 320), '') || ' ' || dedup_key;

-- The same content hash store.content_sha256 computes (length-prefixed UTF-8 fields).
CREATE FUNCTION pg_temp.field(value text) RETURNS bytea LANGUAGE sql IMMUTABLE AS
$$ SELECT int8send(octet_length(convert_to(coalesce(value, ''), 'UTF8'))::bigint)
          || convert_to(coalesce(value, ''), 'UTF8') $$;
UPDATE articles a SET content_sha256 = encode(sha256(
    pg_temp.field(a.subject) || pg_temp.field(a.from_address) || pg_temp.field(a.from_name)
    || pg_temp.field(a.html) || pg_temp.field(a.text_content)
    || coalesce((SELECT string_agg(pg_temp.field(t.sha256), ''::bytea ORDER BY t.sha256 COLLATE "C")
                 FROM attachments t WHERE t.article_id = a.id), ''::bytea)), 'hex');

-- The same bytes to the same member are one article, whatever key they get
CREATE UNIQUE INDEX articles_member_raw ON articles (member_id, raw_sha256);
