"""The reactor's own tables and sequence.

One list for everything that names them: the audit, the privileges and GRANTs, and
`reactor db check` (whose column expectations per table are reactor.catalog.TABLES).
"""

from __future__ import annotations

# The tables the running reactor reads and writes (reactor_schema is only read).
REACTOR_TABLES = (
    "face_metadata",
    "face_detections",
    "face_detection_failures",
    "reactor_claims",
    "reactor_instances",
    "reactor_redetect",
    "reactor_file_identity",
    "reactor_held_deletions",
)
SEQUENCES = ("reactor_claim_token_seq",)
