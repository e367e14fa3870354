"""``python -m alignez_hf.cli demo`` (the Makefile's demo target) runs the ``alignez`` command."""

import sys

from . import main

sys.exit(main())
