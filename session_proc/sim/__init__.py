"""The simulated WhatsApp network: a hub process that plays WhatsApp's servers and
people's phones, and the ``sim`` engine that talks to it over ZeroMQ.

Start the hub with ``python -m session_proc.sim``; use the engine through
:class:`session_proc.sim.engine.SimEngine`.
"""
