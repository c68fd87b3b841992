"""The service's core loop: the queue, detection lanes, claims in flight, sweep, listener, control."""
