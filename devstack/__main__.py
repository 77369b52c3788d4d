"""``python -m devstack``: run the whole local stack (what ``make run`` calls)."""

from devstack.stack import main

raise SystemExit(main())
