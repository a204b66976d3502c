"""monoscope: find polysemantic units in vision models, split them, and score the result.

Importing the package applies the compatibility adapters that must run before the
first ``import torchvision`` or the first optimizer (see :mod:`monoscope.compat`).
"""

from monoscope.compat import (
    defer_optimizer_dynamo_import,
    defer_torchvision_dynamo_import,
    ensure_torchvision_importable,
)

ensure_torchvision_importable()
defer_torchvision_dynamo_import()
defer_optimizer_dynamo_import()

__version__ = "0.1.0"
