-- Ranking: what lets `ghstream top --contributors`, `--repos` and `--commits` answer over a
-- day of hourly buckets without summing every one of them (see "How rankings are computed"
-- in README.md).
--
-- 1. Each hour's leaders come from one short index scan per hour: (bucket, rank value DESC).
-- 2. The candidates' exact totals come from index lookups by key: (key, bucket).
-- 3. The coverage totals (events counted, pushes of unknown size) come from one row per hour.

-- The contributor ranking value, kept by PostgreSQL so the consumer's statement is unchanged.
ALTER TABLE agg_actor_hour ADD COLUMN contributions bigint GENERATED ALWAYS AS (
    pushes + prs_opened + issues_opened + reviews + review_comments + issue_comments
        + commit_comments
) STORED;

-- Only rows that can rank are indexed: an actor-hour without contributions, or a
-- repository-hour without known commits, never leads an hour.
CREATE INDEX agg_actor_hour_rank ON agg_actor_hour (bucket, contributions DESC)
    WHERE contributions > 0;
CREATE INDEX agg_repo_hour_rank_events ON agg_repo_hour (bucket, events DESC);
CREATE INDEX agg_repo_hour_rank_commits ON agg_repo_hour (bucket, commits DESC)
    WHERE commits > 0;

-- Exact totals of candidate actors, and of the logins a ranking leaves out (`ghost`,
-- --bots-file), which match case-insensitively. (agg_repo_hour_repo, from 002, does this
-- for repositories.)
CREATE INDEX agg_actor_hour_login ON agg_actor_hour (lower(actor_login), bucket);

-- `top --commits` when fewer repositories than asked have known commits (GitHub trimmed
-- push payloads in 2025): the rest rank by name, walked in that order.
CREATE INDEX repos_name_c ON repos (repo_name COLLATE "C", repo_key COLLATE "C");
-- ...and the repositories that have no name (an id without a usable name), listed under
-- their key; normally empty.
CREATE INDEX events_repo_without_name ON events (created_at, repo_key)
    WHERE repo_key IS NOT NULL AND repo_name IS NULL;

-- Per hour, what the ranking views state in their coverage, maintained by the consumer in
-- the same statement as agg_actor_hour and agg_repo_hour (so always equal to their sums).
CREATE TABLE agg_hour_totals (
    bucket              timestamptz PRIMARY KEY,
    actor_events        bigint NOT NULL DEFAULT 0,  -- events with an actor login
    actor_pushes_unknown bigint NOT NULL DEFAULT 0,
    bot_events          bigint NOT NULL DEFAULT 0,  -- of those, by `[bot]` logins
    bot_pushes_unknown  bigint NOT NULL DEFAULT 0,
    repo_events         bigint NOT NULL DEFAULT 0,  -- events with a repository
    repo_pushes_unknown bigint NOT NULL DEFAULT 0
);

INSERT INTO agg_hour_totals (bucket, actor_events, actor_pushes_unknown, bot_events,
    bot_pushes_unknown, repo_events, repo_pushes_unknown)
SELECT bucket, coalesce(a.events, 0), coalesce(a.unknown, 0), coalesce(a.bot_events, 0),
    coalesce(a.bot_unknown, 0), coalesce(r.events, 0), coalesce(r.unknown, 0)
FROM (
    SELECT bucket, sum(events) AS events, sum(pushes_unknown) AS unknown,
        sum(events) FILTER (WHERE is_bot) AS bot_events,
        sum(pushes_unknown) FILTER (WHERE is_bot) AS bot_unknown
    FROM agg_actor_hour GROUP BY bucket
) AS a
FULL JOIN (
    SELECT bucket, sum(events) AS events, sum(pushes_unknown) AS unknown
    FROM agg_repo_hour GROUP BY bucket
) AS r USING (bucket);
