#!/usr/bin/env python
"""Generate text: ``./deepy.py generate.py -d configs X.yml local_setup.yml text_generation.yml``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron_lite.inference.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
