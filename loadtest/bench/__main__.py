"""`python -m loadtest.bench ...` == `llm-proxy bench ...`."""

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
