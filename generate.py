#!/usr/bin/env python
"""Generate text: ``./deepy.py generate.py -d configs X.yml local_setup.yml text_generation.yml``."""

import sys

from megatron_lite.inference.main import main

if __name__ == "__main__":
    sys.exit(main())
