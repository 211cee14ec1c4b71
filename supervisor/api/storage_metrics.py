"""Object storage in ``/metrics``' Prometheus exposition: reachability, waiting backups, leases."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.storage.service import SessionStorage


class StorageCollector(Collector):
    """Figures of the worker's object storage at scrape time."""

    def __init__(self, storage: SessionStorage) -> None:
        self.storage = storage

    def collect(self) -> Iterator[Metric]:
        figures = self.storage.health()
        connected = GaugeMetricFamily(
            "wa_worker_storage_connected", "1 while object storage (MinIO or local) is reachable and set up"
        )
        connected.add_metric([], 1 if figures["connected"] else 0)
        pending = GaugeMetricFamily(
            "wa_worker_storage_pending_backups", "Sessions whose latest auth state has not reached object storage"
        )
        pending.add_metric([], figures["pendingBackups"])
        removals = GaugeMetricFamily(
            "wa_worker_storage_pending_removals",
            "Deleted sessions whose objects are still in object storage (removed once it is reachable)",
        )
        removals.add_metric([], figures["pendingRemovals"])
        done = CounterMetricFamily("wa_worker_storage_backups", "Auth-state backups stored since the worker started")
        done.add_metric([], figures["backupsDone"])
        leases = GaugeMetricFamily("wa_worker_storage_leases", "Session leases this worker holds", labels=["state"])
        leases.add_metric(["confirmed"], figures["leasesHeld"])
        leases.add_metric(["unverified"], figures["leasesUnverified"])
        yield from (connected, pending, removals, done, leases)
        liveness = figures["liveness"]
        record = self.storage.liveness
        if liveness is not None and record is not None:  # MinIO only: a worker on local files has no record
            lapsed = GaugeMetricFamily(
                "wa_worker_liveness_lapsed",
                "1 while this worker's liveness record has lapsed: other workers may take its sessions over",
            )
            lapsed.add_metric([], 1 if liveness["lapsed"] else 0)
            until = GaugeMetricFamily(
                "wa_worker_liveness_alive_until_seconds",
                "Unix time until which this worker's liveness record says it is alive (0: never written)",
            )
            # Prometheus times are numbers: the epoch seconds behind /health's ISO aliveUntil.
            until.add_metric([], record.alive_until)
            yield from (lapsed, until)
