"""``python -m fmq_np.cli``: the ``fmq-np`` console script."""
from . import console

console()
