"""The garbage collector's pauses, kept out of the request path and the delivery worker's pace.

What start-up builds (modules, the app, botocore's models, templates: some 150k objects in a
server, more in a worker with the SES client) lives as long as the process, yet every full
collection walked it again: ~50 ms of p99 in the server (`make bench`), and in the delivery
worker a stall of the one dispatcher that hands out SES turns, whose turns are lost for good
(a turn is never used after its instant). Frozen, those objects are never walked again.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive now out of the collector's sight.

    Call it when the process has finished starting (the server's lifespan, the `worker`
    command before it delivers); later garbage is collected as before.
    """
    gc.collect()
    gc.freeze()
