"""The HTTP facade: the seed's REST API on aiohttp, thin over the session registry."""
