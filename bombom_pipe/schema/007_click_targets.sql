-- 007: where click-tracking links lead, and the images the thumbnail was chosen from.

ALTER TABLE newsletters
    ADD COLUMN unsubscribe_http_target text;   -- unsubscribe_http's destination, read from the URL

ALTER TABLE articles
    ADD COLUMN web_version_target      text,   -- web_version_url's destination, read from the URL
    ADD COLUMN unsubscribe_http_target text,   -- unsubscribe_http's destination, read from the URL
    ADD COLUMN image_urls              text[] NOT NULL DEFAULT '{}';  -- thumbnail candidates

-- previous issues of a newsletter, newest first: the images every issue repeats are its logo
CREATE INDEX articles_newsletter_id ON articles (newsletter_id, id DESC);

-- the upsert sets unsubscribe_http_target too: roles that may update unsubscribe_http (the
-- delivery role, see 003) may update it as well
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_attribute att, aclexplode(att.attacl) a
        WHERE att.attrelid = 'newsletters'::regclass AND att.attname = 'unsubscribe_http'
          AND a.privilege_type = 'UPDATE' AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT UPDATE (unsubscribe_http_target) ON newsletters TO %s', grantee);
    END LOOP;
END
$$;
