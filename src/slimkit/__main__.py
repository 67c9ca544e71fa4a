"""``python -m slimkit`` runs the CLI."""

import sys

from slimkit.cli import main

sys.exit(main())
