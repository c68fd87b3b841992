"""Small helpers below every layer: waits, backoff, rate limiting, progress, DSNs, file identity."""
