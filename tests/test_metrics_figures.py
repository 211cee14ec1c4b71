"""/metrics shows how far behind each event consumer is, and the running message figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import free_port, running_worker, wait_for

PHONE = "6281888000"


async def test_metrics_show_each_event_consumers_oldest_undelivered_event(tmp_path: Path) -> None:
    async with running_worker(tmp_path, WEBHOOK_ALLOW_PRIVATE="true") as w:  # a dead receiver on loopback
        await w.create_linked("lag", PHONE)
        dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: nothing is ever delivered
        status, body = await w.api("PUT", "/session/lag/webhook", json={"url": dead})
        assert status == 200, body
        status, body = await w.hub("POST", "/phones/6289888111/messages", json={"to": PHONE, "text": "halo"})
        assert status == 200, body

        async def behind() -> dict[str, Any] | None:
            status, figures = await w.api("GET", "/metrics")
            assert status == 200, figures
            consumers = {c["name"]: c for c in figures["eventConsumers"]}
            hook = consumers.get("webhook:lag")
            return hook if hook and (hook["oldestUndeliveredAge"] or 0) > 0 else None

        hook = await wait_for(behind, what="the webhook's lag in /metrics")
        assert hook["sessionId"] == "lag" and isinstance(hook["lastEventId"], int)
        status, figures = await w.api("GET", "/metrics")
        assert figures["messages"]["received"] == 1 and figures["messages"]["purged"] == 0
        status, text = await w.api("GET", "/metrics?format=prometheus")
        assert status == 200
        assert 'wa_worker_event_consumer_lag_seconds{consumer="webhook:lag"}' in text
        assert "wa_worker_messages_purged_total 0.0" in text
