"""The supervisor: the parent process that runs, watches and restarts the session processes."""
