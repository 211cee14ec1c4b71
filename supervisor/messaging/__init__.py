"""Messages on their way: the durable outbox, message statuses, history rows and views,
per-session message figures and the count of sends in flight."""
