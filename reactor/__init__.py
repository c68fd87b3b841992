"""face-reactor: finds every face in a photo library beside its PostgreSQL database."""
