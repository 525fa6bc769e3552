-- 008: each member's own links for a newsletter. List-Unsubscribe carries a per-recipient token
-- or address on real newsletters (`…/disable?token=…`, `mailto:<the recipient, encoded>@…`), so
-- one shared value shows member A's link to member B. `subscriptions` holds, per member and
-- newsletter, the links from that member's own mail; the newsletters row keeps only what is the
-- same for everyone. Its unsubscribe_* columns stay (names are a contract) but are no longer
-- written, and are cleared here: what they held was one member's link.

CREATE TABLE subscriptions (
    member_id               bigint NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    newsletter_id           bigint NOT NULL REFERENCES newsletters(id) ON DELETE CASCADE,
    unsubscribe_http        text,      -- this member's own, latest (see docs/schema.md)
    unsubscribe_mailto      text,
    unsubscribe_one_click   boolean NOT NULL DEFAULT false,
    unsubscribe_http_target text,      -- where unsubscribe_http leads, read from the URL
    confirmation_url        text,      -- the latest "confirm your subscription" link
    first_seen_at           timestamptz NOT NULL DEFAULT now(),
    last_seen_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, newsletter_id)
);
CREATE INDEX subscriptions_newsletter ON subscriptions (newsletter_id);

-- every member's links from the articles they already have: the latest that carried one, and
-- once the newsletter was seen authenticated, only from its authenticated issues
INSERT INTO subscriptions (member_id, newsletter_id, unsubscribe_http, unsubscribe_mailto,
                           unsubscribe_one_click, unsubscribe_http_target, confirmation_url,
                           first_seen_at, last_seen_at)
SELECT a.member_id, a.newsletter_id,
       (array_agg(a.unsubscribe_http ORDER BY a.id DESC)
            FILTER (WHERE a.unsubscribe_http IS NOT NULL AND t.ok))[1],
       (array_agg(a.unsubscribe_mailto ORDER BY a.id DESC)
            FILTER (WHERE a.unsubscribe_mailto IS NOT NULL AND t.ok))[1],
       coalesce((array_agg(a.unsubscribe_one_click ORDER BY a.id DESC)
            FILTER (WHERE a.unsubscribe_http IS NOT NULL AND t.ok))[1], false),
       (array_agg(a.unsubscribe_http_target ORDER BY a.id DESC)
            FILTER (WHERE a.unsubscribe_http IS NOT NULL AND t.ok))[1],
       (array_agg(a.confirmation_url ORDER BY a.id DESC)
            FILTER (WHERE a.confirmation_url IS NOT NULL AND t.ok))[1],
       min(a.received_at), max(a.received_at)
FROM articles a
JOIN newsletters n ON n.id = a.newsletter_id
CROSS JOIN LATERAL (SELECT n.authenticated_at IS NULL OR a.auth_verdict = 'pass' AS ok) t
GROUP BY a.member_id, a.newsletter_id;

UPDATE newsletters SET unsubscribe_http = NULL, unsubscribe_mailto = NULL,
                       unsubscribe_one_click = false, unsubscribe_http_target = NULL;

-- The delivery role (the roles that may INSERT articles) upserts subscriptions, and no longer
-- updates the newsletters' unsubscribe columns; from now on `bombom init-db --delivery-role`
-- grants the same (GRANTS in schema/__init__.py).
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'articles'::regclass AND a.privilege_type = 'INSERT'
          AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE (unsubscribe_http, unsubscribe_mailto, '
                       'unsubscribe_one_click, unsubscribe_http_target, confirmation_url, '
                       'last_seen_at) ON subscriptions TO %s', grantee);
    END LOOP;
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_attribute t, aclexplode(t.attacl) a
        WHERE t.attrelid = 'newsletters'::regclass AND t.attname = 'unsubscribe_http'
          AND a.privilege_type = 'UPDATE' AND a.grantee <> 0
    LOOP
        EXECUTE format('REVOKE UPDATE (unsubscribe_http, unsubscribe_mailto, '
                       'unsubscribe_one_click, unsubscribe_http_target) ON newsletters FROM %s',
                       grantee);
    END LOOP;
END
$$;
