#!/usr/bin/env python
"""Merge YAML configs and run a megatron_lite script under the DeepSpeed launcher.

    ./deepy.py train.py -d configs 125M.yml local_setup.yml
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron_lite.launcher.deepy import main  # noqa: E402
from megatron_lite.utils.logging import setup_logging  # noqa: E402

if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
