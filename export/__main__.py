"""`python -m export` is `tritonrag export`."""

import sys

from orchestrator.cli.main import app

if __name__ == "__main__":
    app(["export", *sys.argv[1:]])
