"""learn2learn, imported in one place.

Importing learn2learn imports its bundled gym, which prints an unmaintained-package notice on every
start; that notice says nothing about metacompare's use (we never touch gym), so it is swallowed here.
"""

import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):
    import learn2learn

l2l = learn2learn
__all__ = ["l2l"]
