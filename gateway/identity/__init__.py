"""Who is calling: password rules and hashes, one-time tokens, sealed secrets, the signing
keys and JWTs, the sign-in throttle, and the cache of accepted service tokens."""
