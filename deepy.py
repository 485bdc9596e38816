#!/usr/bin/env python
"""Merge YAML configs and run a megatron_lite script under the DeepSpeed launcher.

    ./deepy.py train.py -d configs 125M.yml local_setup.yml
"""

import sys

from megatron_lite.launcher.deepy import main
from megatron_lite.utils.logging import setup_logging

if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
