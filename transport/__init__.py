"""What the supervisor and the session processes share: the frames (``protocol``), the ZeroMQ
channels (``channel``), every operation and its typed body (``wire``) and the routing identity
(``identity``)."""
