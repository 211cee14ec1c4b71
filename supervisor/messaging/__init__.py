"""Messages on their way: the durable outbox, message ids, per-session message figures
and the count of sends in flight."""
