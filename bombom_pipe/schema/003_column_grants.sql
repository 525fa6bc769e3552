-- 003: the delivery role may UPDATE only the newsletters columns its upsert sets (not
-- keep_forever, not sender_address). Roles granted UPDATE on the whole table before this get
-- exactly that column grant instead, in this transaction, so deliveries never stop; from now on
-- `bombom init-db --delivery-role` grants NEWSLETTER_UPSERT_COLUMNS (schema/__init__.py).
DO $$
DECLARE
    grantee regrole;
BEGIN
    REVOKE UPDATE ON newsletters FROM PUBLIC;
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'newsletters'::regclass AND a.privilege_type = 'UPDATE'
          AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('REVOKE UPDATE ON newsletters FROM %s', grantee);
        EXECUTE format('GRANT UPDATE (display_name, list_id, sender_header, unsubscribe_http, '
                       'unsubscribe_mailto, unsubscribe_one_click, last_seen_at) '
                       'ON newsletters TO %s', grantee);
    END LOOP;
END
$$;
