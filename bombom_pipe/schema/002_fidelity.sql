-- 002: what the app shows beyond the basics: preview, unsubscribe, safe HTML, attachments.

ALTER TABLE newsletters
    ADD COLUMN sender_header      text,      -- Sender: address, when it differs from From
    ADD COLUMN unsubscribe_http   text,      -- latest known; never overwritten with NULL
    ADD COLUMN unsubscribe_mailto text,
    ADD COLUMN unsubscribe_one_click boolean NOT NULL DEFAULT false,
    ADD COLUMN keep_forever       boolean NOT NULL DEFAULT false;  -- `bombom prune` spares it

ALTER TABLE articles
    ADD COLUMN display_html       text,      -- sanitized for the app; never changed once stored
    ADD COLUMN preview            text,
    ADD COLUMN unsubscribe_http   text,
    ADD COLUMN unsubscribe_mailto text,
    ADD COLUMN unsubscribe_one_click boolean NOT NULL DEFAULT false,
    ADD COLUMN web_version_url    text,
    ADD COLUMN thumbnail_url      text,
    ADD COLUMN reading_minutes    integer,
    ADD COLUMN confirmation_url   text,      -- set on "confirm your subscription" mails
    ADD COLUMN charsets           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN replacement_chars  boolean NOT NULL DEFAULT false,
    ADD COLUMN parse_fallbacks    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN skipped_attachments text[] NOT NULL DEFAULT '{}';

CREATE TABLE attachments (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    article_id      bigint NOT NULL REFERENCES articles(id),
    filename        text,                    -- decoded and sanitized; never used as a path
    content_type    text NOT NULL,
    disposition     text NOT NULL,           -- attachment | inline
    content_id      text,
    size            bigint NOT NULL,
    sha256          text NOT NULL,           -- file: <spool>/att/<ab>/<sha256>
    UNIQUE (article_id, sha256, content_id)
);
CREATE INDEX attachments_sha256 ON attachments (sha256);
