"""What the supervisor and the session processes share: the wire protocol and the ZeroMQ channel."""
