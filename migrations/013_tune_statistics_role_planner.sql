-- 013: planner cost for the read-only statistics role in this database.
--
-- The statistics tables are small enough to stay in memory (and sit on SSDs in production),
-- so random index access costs about as much as sequential access. With the default
-- random_page_cost (4.0) the planner reads all performance scores sequentially and hash-joins
-- them for the cohort summary; at 1.1 it uses the two covering indexes of 011 in a merge join.
-- Scoped to the role and this database: other services keep the defaults.

DO $tune$
BEGIN
    EXECUTE format('ALTER ROLE ghostly_statistics IN DATABASE %I SET random_page_cost = 1.1', current_database());
END
$tune$;
