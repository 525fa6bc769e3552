-- 001: members, newsletters, articles, deliveries. The Bombom app reads these: names are a contract.

CREATE TABLE members (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address     text NOT NULL UNIQUE CHECK (address = lower(address) AND address LIKE '%_@_%'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE newsletters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender_address  text NOT NULL UNIQUE,          -- From address, lower-case
    display_name    text,                          -- latest From display name seen
    list_id         text,                          -- List-Id, when the sender sets one
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE articles (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id       bigint NOT NULL REFERENCES members(id),
    newsletter_id   bigint REFERENCES newsletters(id),
    -- idempotency: Message-ID when present, else 'sha256:' || raw_sha256; one article per member
    dedup_key       text NOT NULL,
    message_id      text,
    subject         text,
    from_address    text,
    from_name       text,
    date_header     text,                          -- the Date header as written
    sent_at         timestamptz,                   -- parsed Date, NULL when unreadable
    received_at     timestamptz NOT NULL DEFAULT now(),
    html            text,                          -- original HTML, untouched
    text_content    text,
    list_id         text,
    list_unsubscribe text,
    envelope_sender text,
    raw_sha256      text NOT NULL,
    raw_path        text NOT NULL,
    UNIQUE (member_id, dedup_key)
);
CREATE INDEX articles_member_received ON articles (member_id, received_at DESC);
CREATE INDEX articles_raw_sha256 ON articles (raw_sha256);

CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id        text,
    recipient       text,
    raw_sha256      text,
    outcome         text NOT NULL
                    CHECK (outcome IN ('stored', 'duplicate', 'quarantined', 'tempfail', 'nouser')),
    detail          text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    member_id       bigint REFERENCES members(id),
    article_id      bigint REFERENCES articles(id),
    message_id      text,
    envelope_sender text,
    client_address  text
);
CREATE INDEX deliveries_outcome_started ON deliveries (outcome, started_at);
CREATE INDEX deliveries_raw_sha256 ON deliveries (raw_sha256);
