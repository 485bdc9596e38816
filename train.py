#!/usr/bin/env python
"""Train a GPT model: ``./deepy.py train.py -d configs 125M.yml local_setup.yml``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron_lite.training.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
