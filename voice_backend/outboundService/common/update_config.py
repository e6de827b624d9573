"""`common.update_config` under the seed's path: the very same module (one config store, one
set of functions), not a copy, whichever name imported it first."""

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see: the same public API
    from common.update_config import *  # noqa: F403
    from common.update_config import __all__ as __all__
else:
    from common import update_config as _module

    sys.modules[__name__] = _module
