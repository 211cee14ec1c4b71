"""Pieces of the neonize engine (see ``session_proc.neonize.engine``).

Every module here but ``loader`` and ``journal`` imports neonize, whose import
loads a Go runtime: import them only in a session process, after
``loader.load()``, never in the supervisor.
"""
