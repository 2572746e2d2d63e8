"""``python -m fmq_np.cli``: the ``fmq-np`` console script."""
import sys

from . import main

sys.exit(main())
