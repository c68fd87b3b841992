"""Small helpers below every layer: waits, backoff, rate limiting, progress, DSNs, file identity,
storable text, the share's threads with deadlines, process hardening."""
