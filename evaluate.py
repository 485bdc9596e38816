#!/usr/bin/env python
"""Evaluate a model: ``./deepy.py evaluate.py -d configs X.yml local_setup.yml --eval_tasks piqa``."""

import sys

from megatron_lite.evaluation.main import main

if __name__ == "__main__":
    sys.exit(main())
