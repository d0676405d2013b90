-- drover:no-transaction
-- Built without locking writes: old and new workers keep writing meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS feedback_stats_tone ON feedback_stats (tone);
