"""Built-in passes, one module each (installed as ``graphprune.passes``).

Importing this package imports every module in it, and each module registers
its pass by name with ``@register`` (``graphprune passes`` lists them), so
adding a pass is adding a file.
"""

import importlib
import pkgutil

from graphprune.pipeline import PASSES, Pass, Pipeline, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The lossless default of `graphprune fold`, run to a fixed point; passes not
# (yet) installed are skipped by build_pipeline's caller.
DEFAULT_FOLD = ["fold-constants", "simplify-shapes", "remove-identities", "fold-batchnorm", "fold-channel-affine",
                "dead-channels", "dedup", "dce"]

__all__ = ["PASSES", "Pass", "Pipeline", "register", "DEFAULT_FOLD"]
