-- Analytics: the tables `ghstream aggregate` builds, and the indexes `ghstream top` reads through.
--
-- Every table here is derived from `events` and the real-time aggregates of
-- 001_core.sql, so `ghstream aggregate --full` can rebuild it at any time.
-- Day and week buckets are UTC (date_trunc(..., 'UTC')); weeks start on Monday.

-- The aggregate job finds what is new since its last run by the time an event was stored.
CREATE INDEX events_stored_at ON events (stored_at);

-- `top --repo` / `--org` resolve names to repository keys.
CREATE INDEX repos_name_lower ON repos (lower(repo_name));
CREATE INDEX repos_owner_lower ON repos (lower(split_part(repo_name, '/', 1)));

-- `top --repo` reads one repository's hours; the key leads so the range scan stays narrow.
CREATE INDEX agg_repo_hour_repo ON agg_repo_hour (repo_key, bucket);

-- One row per job: every event stored before `watermark` has been aggregated.
CREATE TABLE aggregate_state (
    job             text PRIMARY KEY,
    watermark       timestamptz NOT NULL,
    full_rebuilt_at timestamptz,
    updated_at      timestamptz NOT NULL
);

-- Distinct actors per repository per hour (what agg_repo_hour cannot sum).
CREATE TABLE agg_repo_hour_actors (
    bucket   timestamptz NOT NULL,
    repo_key text        NOT NULL,
    actors   bigint      NOT NULL,
    PRIMARY KEY (bucket, repo_key)
);

-- Repository activity per day: the sums of agg_repo_hour, plus distinct actors.
CREATE TABLE agg_repo_day (
    bucket         timestamptz NOT NULL,
    repo_key       text        NOT NULL,
    events         bigint      NOT NULL,
    actors         bigint      NOT NULL,
    pushes         bigint      NOT NULL,
    commits        bigint      NOT NULL,
    pushes_unknown bigint      NOT NULL,
    prs_opened     bigint      NOT NULL,
    prs_merged     bigint      NOT NULL,
    prs_closed     bigint      NOT NULL,
    issues_opened  bigint      NOT NULL,
    issues_closed  bigint      NOT NULL,
    stars          bigint      NOT NULL,
    forks          bigint      NOT NULL,
    releases       bigint      NOT NULL,
    PRIMARY KEY (bucket, repo_key)
);

-- Contributor trends: the sums of agg_actor_hour per day and per ISO week, the
-- contribution total, and distinct repositories the actor contributed to.
CREATE TABLE agg_actor_day (
    bucket          timestamptz NOT NULL,
    actor_login     text        NOT NULL,
    is_bot          boolean     NOT NULL,
    events          bigint      NOT NULL,
    contributions   bigint      NOT NULL,
    pushes          bigint      NOT NULL,
    commits         bigint      NOT NULL,
    pushes_unknown  bigint      NOT NULL,
    prs_opened      bigint      NOT NULL,
    issues_opened   bigint      NOT NULL,
    reviews         bigint      NOT NULL,
    review_comments bigint      NOT NULL,
    issue_comments  bigint      NOT NULL,
    commit_comments bigint      NOT NULL,
    repos           bigint      NOT NULL,
    PRIMARY KEY (bucket, actor_login)
);
CREATE INDEX agg_actor_day_actor ON agg_actor_day (actor_login, bucket);

CREATE TABLE agg_actor_week (LIKE agg_actor_day INCLUDING ALL);

-- The UTC day of each actor's first stored contribution: new versus returning.
CREATE TABLE contributor_first_seen (
    actor_login text PRIMARY KEY,
    first_day   timestamptz NOT NULL
);

-- Per day: contributors (not bots, not `ghost`), how many contributed for the first time.
CREATE TABLE agg_contributors_day (
    bucket                 timestamptz PRIMARY KEY,
    contributors           bigint NOT NULL,
    new_contributors       bigint NOT NULL,
    returning_contributors bigint NOT NULL,
    bot_contributors       bigint NOT NULL
);

-- Time to resolution per issue / pull request (see ghstream.resolution).
CREATE TABLE item_resolution (
    repo_key  text             NOT NULL,
    number    integer          NOT NULL,
    item_kind text             NOT NULL,  -- issue | pull_request
    outcome   text             NOT NULL,  -- open | issue | pr_merged | pr_unmerged | undetermined
    opened_at timestamptz,
    closed_at timestamptz,
    seconds   double precision,
    reason    text,
    PRIMARY KEY (repo_key, number, item_kind)
);
CREATE INDEX item_resolution_closed ON item_resolution (closed_at) WHERE closed_at IS NOT NULL;
