#!/usr/bin/env python
"""Train a GPT model: ``./deepy.py train.py -d configs 125M.yml local_setup.yml``."""

import sys

from megatron_lite.training.main import main

if __name__ == "__main__":
    sys.exit(main())
