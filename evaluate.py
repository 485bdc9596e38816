#!/usr/bin/env python
"""Evaluate a model: ``./deepy.py evaluate.py -d configs X.yml local_setup.yml --eval_tasks piqa``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megatron_lite.evaluation.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
