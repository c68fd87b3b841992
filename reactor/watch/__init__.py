"""Watching the share: the observer or polling scanner, stability, mounts and file events."""
