"""This instance's share of the work when several reactors share one database (issue 28).

Every instance hears every notification and, before this split, queued and tried to
claim every image: N instances made N claim attempts per image and N-1 of them lost,
and a bulk storm (read from the change log under the sweep's lock) went to one
instance. Now the paths are split: an instance owns a path when the path's hash
modulo the number of live instances is its rank among them (ids in order, from the
heartbeats in ``reactor_instances``, refreshed at every heartbeat).

- A ``processed`` notification is queued only by the path's owner.
- Each instance reads its own share of the change log, with or without the sweep's
  lock, and then changes of any share left unread longer than a lease (their
  owner is busy or gone: the idle take over the busy).
- Everything else is not split (manual requests, file events, retries, expired
  claims, the full walk): those are few, and the claim decides between instances.

Claims still decide who detects: two instances that disagree for a moment about the
live set (one heartbeat) only try the same image twice, and one of them loses.
A crashed instance's share goes to the others as soon as its heartbeat is stale;
what it had queued is found by the full walk its stale row asks for
(reactor.core.service).
"""

from __future__ import annotations

from reactor.store.changes import share_of


class WorkShare:
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        # Alone (or not yet heard from the heartbeats): everything is this instance's.
        self.count = 1
        self.rank = 0

    def update(self, live: list[str]) -> bool:
        """Take the live instances' ids; True when this instance's share changed."""
        ids = sorted(set(live) | {self.instance_id})
        count, rank = len(ids), ids.index(self.instance_id)
        changed = (count, rank) != (self.count, self.rank)
        self.count, self.rank = count, rank
        return changed

    def mine(self, path: str) -> bool:
        return self.count <= 1 or share_of(path, self.count) == self.rank

    def as_dict(self) -> dict[str, int]:
        return {"instances": self.count, "rank": self.rank}
