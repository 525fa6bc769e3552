-- 006: a member's address has no +tag. Postfix's RCPT lookup tries alice+promo@ before alice@, but
-- bombom-deliver stores for the address without its tag: a member row 'alice+promo@...' would be
-- accepted at RCPT and then answered "no such member" (a bounce to the publisher). `bombom members
-- add` strips tags; this refuses rows written any other way.

DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(address, ', ') INTO bad FROM members WHERE strpos(address, '+') > 0;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'members with a +tag cannot receive mail (bombom-deliver strips tags): %; '
                        'change them to the address without the tag first', bad;
    END IF;
END $$;

ALTER TABLE members
    ADD CONSTRAINT members_address_no_tag CHECK (strpos(address, '+') = 0);
