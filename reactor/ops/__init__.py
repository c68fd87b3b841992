"""The operator's tools behind the CLI: audit, repair, doctor, status, failures, demo, samples."""
