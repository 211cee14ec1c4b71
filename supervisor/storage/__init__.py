"""Object storage: session backups, leases and media, in MinIO or on the local filesystem.

``objects`` is the interface, ``local`` and ``s3`` its two backends, ``snapshot``
and ``cipher`` make and seal backups, ``backups`` schedules and versions them,
``leases`` keeps two workers off one session, ``liveness`` lets a dead worker's
sessions fail over fast, ``removals`` keeps deletes storage could not carry out
yet, ``service`` is what the session registry calls.
"""
