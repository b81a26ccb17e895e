"""Allow ``python -m llmload``."""

import sys

from llmload.cli import main

sys.exit(main())
