"""What happened: the hash-chained audit trail, the decision log, last-seen activity per
person and workspace, and the sampled refusals of callers who are not signed in."""
