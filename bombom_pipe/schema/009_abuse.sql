-- 009: abuse controls (docs/operations.md, "Abuse controls").
--   member_blocks    a member's own block of a sender: applied at delivery (outcome 'blocked':
--                    raw kept, a deliveries row, no article, exit 0, never bounced)
--   operator_blocks  the operator's list (address, domain or client network), read by Postfix
--                    through pgsql: access maps with the lookup role: 550 5.7.1 at the door
--   domain_volume    stored articles per sender domain and day, for `domain_daily_limit`

CREATE TABLE member_blocks (
    member_id  bigint NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    -- an address (news@letter.example) or a domain (letter.example), lower-case
    sender     text NOT NULL CHECK (sender = lower(sender) AND sender <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, sender)
);

CREATE TABLE operator_blocks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- exactly one of: a sender address or domain (lower-case), or a client network
    sender     text UNIQUE CHECK (sender = lower(sender) AND sender <> ''),
    client     cidr UNIQUE,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((sender IS NULL) <> (client IS NULL))
);
-- "which network holds this address" (client >>= address) from an index, not a scan of the list
CREATE INDEX operator_blocks_client ON operator_blocks USING gist (client inet_ops);

-- Postfix asks check_client_access for the address, its shorter prefixes ("192.0.2") and the
-- client's name; only a whole address is an inet. Never an error (an error is a temporary
-- lookup failure: 451 for everyone).
CREATE FUNCTION bombom_inet(key text) RETURNS inet LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF key !~ '^[0-9A-Fa-f.:]+$' THEN
        RETURN NULL;
    END IF;
    RETURN key::inet;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

CREATE TABLE domain_volume (
    domain      text NOT NULL,
    day         date NOT NULL,           -- UTC
    messages    integer NOT NULL DEFAULT 0,   -- articles it tried to store that day
    quarantined integer NOT NULL DEFAULT 0,   -- of which past the limit
    PRIMARY KEY (domain, day)
);

ALTER TABLE deliveries DROP CONSTRAINT deliveries_outcome_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_outcome_check
    CHECK (outcome IN ('stored', 'duplicate', 'quarantined', 'tempfail', 'nouser', 'blocked'));

-- Existing roles get what `bombom init-db` now grants (GRANTS in schema/__init__.py): the
-- delivery roles (those that may INSERT articles) read member blocks and count volume; the
-- lookup roles (those that read members and may not INSERT articles) read the operator's list.
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
        EXECUTE format('GRANT SELECT ON member_blocks TO %s', grantee);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE (messages, quarantined) ON domain_volume '
                       'TO %s', grantee);
    END LOOP;
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'members'::regclass AND a.privilege_type = 'SELECT'
          AND a.grantee <> c.relowner AND a.grantee <> 0
          AND NOT has_table_privilege(a.grantee, 'articles', 'INSERT')
    LOOP
        EXECUTE format('GRANT SELECT ON operator_blocks TO %s', grantee);
    END LOOP;
END
$$;
