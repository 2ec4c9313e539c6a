-- Core schema: the fact table of normalized events and the real-time aggregates
-- that the consumer maintains in the same transaction as each new event's insert.
--
-- Buckets are UTC times computed by ghstream (not date_trunc, which follows the
-- session time zone). repo_key is the repository id as text when known, else its
-- name, so a renamed repository stays one row; `repos` maps it to its newest name.

CREATE TABLE events (
    id                  text PRIMARY KEY,
    type                text        NOT NULL,
    created_at          timestamptz NOT NULL,
    actor_login         text,
    actor_id            bigint,
    actor_is_bot        boolean     NOT NULL,
    repo_key            text,
    repo_name           text,
    repo_id             bigint,
    org                 text,
    action              text,
    public              boolean     NOT NULL,
    push_size           integer,
    push_distinct_size  integer,
    push_commits_listed integer,
    commits             integer,    -- known commits (distinct, else size, else listed); NULL = unknown
    number              integer,
    is_pull_request     boolean,
    item_created_at     timestamptz,
    item_closed_at      timestamptz,
    item_merged_at      timestamptz,
    merged              boolean,
    ref_type            text,
    forkee              text,
    release_tag         text,
    review_state        text,
    stored_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_created_at ON events (created_at);
CREATE INDEX events_type_created_at ON events (type, created_at);
CREATE INDEX events_repo_created_at ON events (repo_key, created_at);
CREATE INDEX events_actor_created_at ON events (actor_login, created_at);
CREATE INDEX events_items ON events (repo_key, number) WHERE number IS NOT NULL;

-- Newest known name of each repository (by event time).
CREATE TABLE repos (
    repo_key     text PRIMARY KEY,
    repo_id      bigint,
    repo_name    text        NOT NULL,
    org          text,
    name_seen_at timestamptz NOT NULL
);

-- Events per minute per type.
CREATE TABLE agg_type_minute (
    bucket timestamptz NOT NULL,
    type   text        NOT NULL,
    events bigint      NOT NULL,
    PRIMARY KEY (bucket, type)
);

-- Per repository per hour.
CREATE TABLE agg_repo_hour (
    bucket          timestamptz NOT NULL,
    repo_key        text        NOT NULL,
    events          bigint      NOT NULL DEFAULT 0,
    pushes          bigint      NOT NULL DEFAULT 0,
    commits         bigint      NOT NULL DEFAULT 0,  -- known commits only
    pushes_unknown  bigint      NOT NULL DEFAULT 0,  -- pushes whose payload carries no count
    prs_opened      bigint      NOT NULL DEFAULT 0,
    prs_merged      bigint      NOT NULL DEFAULT 0,
    prs_closed      bigint      NOT NULL DEFAULT 0,  -- closed without merge
    issues_opened   bigint      NOT NULL DEFAULT 0,
    issues_closed   bigint      NOT NULL DEFAULT 0,
    stars           bigint      NOT NULL DEFAULT 0,  -- WatchEvent started
    forks           bigint      NOT NULL DEFAULT 0,
    releases        bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, repo_key)
);

-- Per actor per hour: the contributions that rank contributors.
CREATE TABLE agg_actor_hour (
    bucket          timestamptz NOT NULL,
    actor_login     text        NOT NULL,
    is_bot          boolean     NOT NULL,
    events          bigint      NOT NULL DEFAULT 0,
    pushes          bigint      NOT NULL DEFAULT 0,
    commits         bigint      NOT NULL DEFAULT 0,
    pushes_unknown  bigint      NOT NULL DEFAULT 0,
    prs_opened      bigint      NOT NULL DEFAULT 0,
    issues_opened   bigint      NOT NULL DEFAULT 0,
    reviews         bigint      NOT NULL DEFAULT 0,
    review_comments bigint      NOT NULL DEFAULT 0,
    issue_comments  bigint      NOT NULL DEFAULT 0,
    commit_comments bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, actor_login)
);

-- Gaps that live ingestion reported (feed windows that shared no id with the last poll).
CREATE TABLE ingest_gaps (
    id              text PRIMARY KEY,    -- the gap notice's id, so a redelivery is a no-op
    feed            text        NOT NULL,
    detected_at     timestamptz NOT NULL,
    estimated_missed integer
);
