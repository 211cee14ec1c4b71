"""Events leaving the worker: the durable event log, its delivery cursors, webhooks and
the backend link."""
