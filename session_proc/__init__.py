"""The session process: one per WhatsApp session, driven by the supervisor over ZeroMQ."""
