"""The worker's SQLite database: one writer thread with group commit, and the store
every other part reads and writes through."""
