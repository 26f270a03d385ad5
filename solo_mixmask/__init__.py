"""solo-mixmask: MixMask for Siamese self-supervised learning, in the solo-learn style.

Data flow: ``data`` (datasets, crops) -> ``methods`` (backbone, heads, MixMask branches from
``mixmask``) -> ``losses`` -> ``eval`` (KNN, linear, semi-supervised, exports). ``engine`` runs the
training loop on Lightning; ``cli`` is the ``solo-mixmask`` command.
"""

from .__version__ import __version__

__all__ = ["__version__"]
