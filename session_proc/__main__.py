"""Entry point: ``python -m session_proc --session-id ... --incarnation ... --endpoint ...``."""

from session_proc.main import main

raise SystemExit(main())
