"""`python -m vigil_cli`: the same as `vigil`."""

import sys

from vigil_cli.main import main

sys.exit(main())
