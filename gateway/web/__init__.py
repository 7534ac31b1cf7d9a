"""HTTP: the decision endpoints (plain check, AuthZEN, the check lane), OAuth, the accept and
reset pages, single sign-on, freshness headers, idempotency, and the shared request
plumbing (errors as problem+json, request ids, JSON input, the services of a request)."""
