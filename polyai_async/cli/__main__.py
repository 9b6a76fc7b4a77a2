"""``python -m polyai_async.cli``: the same as the ``polyai-async`` command."""

import sys

from . import main

sys.exit(main())
