"""Supervision of child processes: the restart policy and process states, and the
spawning, watching and sampling of the session processes and the simulated network's hub."""
