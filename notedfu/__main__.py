"""Allow ``python -m notedfu``."""

from notedfu.cli import main

raise SystemExit(main())
