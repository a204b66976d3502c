"""monoscope: find polysemantic units in vision models, split them, and score the result.

Importing the package applies the compatibility adapters that must run before the
first ``import torchvision`` (see :mod:`monoscope.compat`).
"""

from monoscope.compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
