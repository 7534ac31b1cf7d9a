"""Keeping every replica's engine in step with what is committed: the change log, applying
revisions in order, the Redis change notices and the revision poll."""
