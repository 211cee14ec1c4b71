"""Object storage: session backups, leases and media, in MinIO or on the local filesystem.

``objects`` is the interface, ``local`` and ``s3`` its two backends, ``snapshot``
and ``cipher`` make and seal backups, ``leases`` keeps two workers off one
session, ``service`` is what the session registry calls.
"""
