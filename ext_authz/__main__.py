"""`python -m ext_authz` runs the command-line interface."""

import sys

from ext_authz.cli import main

sys.exit(main())
