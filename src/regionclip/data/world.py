"""The world generator's former module: it moved to :mod:`regionclip.world` (``regionclip.world.generator``).

Importing ``regionclip.data.world`` gives that module itself (every name, the same objects), so that code
written against the old path keeps working.
"""

import sys

from regionclip.world import generator

sys.modules[__name__] = generator
