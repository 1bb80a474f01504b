"""Jobs: enqueueing and reconciling them, following one from a terminal, the local services,
database-cut survival."""
