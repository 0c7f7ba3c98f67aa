"""The process's existing objects left out of garbage collection while a pass runs.

CPython's oldest-generation collection walks every tracked object of the process:
with torch and torchvision (or transformers) imported that is hundreds of thousands
of objects, about 0.2 s per collection, and a pass that allocates many small objects
triggers one every few calls (a 0.5 s MobileNetV2 prune measured 0.76 s when one
landed in it). ``gc.freeze()`` moves the objects that exist when the pass starts to a
permanent generation that collections skip, ``gc.unfreeze()`` puts them back: the
pass's own garbage is collected as usual, and nothing is lost, only cycles among the
pre-existing objects wait until the pass ends. Both calls are O(1) list splices.
"""

from __future__ import annotations

import functools
import gc
import threading

_lock = threading.Lock()
_depth = 0  # nested or concurrent passes: the first freezes, the last unfreezes
_froze = False  # whether the first did: a process that froze objects itself (a pre-forking server)
# or turned collection off keeps its own arrangement, since unfreeze() would thaw its objects too


def heap_frozen(fn):
    """Decorator: run ``fn`` with the objects that exist at its start frozen (see above)."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        global _depth, _froze
        with _lock:
            if _depth == 0:
                _froze = gc.isenabled() and gc.get_freeze_count() == 0
                if _froze:
                    gc.freeze()
            _depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _depth -= 1
                if _depth == 0 and _froze:
                    gc.unfreeze()
                    _froze = False
    return inner
