-- 010: every host can replay every message. The raw bytes of each delivery are kept in the
-- database, keyed by their sha256, written in the delivery's own transaction (store.keep_raw):
-- once it commits, the bytes are as durable as the article and reachable from every MX host,
-- where the spool file is on one host's disk only. The spool stays the first copy (saved and
-- fsynced before anything else, and the only one while the database is down). Written once per
-- message (ON CONFLICT DO NOTHING), never updated; `bombom prune` deletes old rows as it deletes
-- old files. PostgreSQL compresses the bytes (TOAST) on the way in.
CREATE TABLE raw_messages (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes       bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_messages_received ON raw_messages (received_at);

-- which edge host a delivery came through: the client address PostgreSQL saw (NULL over a unix
-- socket). Rows from before stay NULL (the default is set after the column is added).
ALTER TABLE deliveries ADD COLUMN edge_address inet;
ALTER TABLE deliveries ALTER COLUMN edge_address SET DEFAULT inet_client_addr();

-- The delivery role (the roles that may INSERT articles) writes and reads raw_messages (replay
-- runs as the delivery user); from now on `bombom init-db --delivery-role` grants the same
-- (GRANTS in schema/__init__.py). No UPDATE, no DELETE: pruning is the owner's.
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
        EXECUTE format('GRANT SELECT, INSERT ON raw_messages TO %s', grantee);
    END LOOP;
END
$$;
