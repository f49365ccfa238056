"""The controller's listeners, guarded: connection caps, header timeouts, and accept loops
that back off and resume when the process runs out of descriptors. See docs/controller.md
("Connections and limits").

    limits.py    pure: ListenerLimits, ConnectionTable, AcceptBackoff
    listener.py  GuardedListener (the accept loop), ListenerCollector (/metrics)
    http.py      uvicorn behind a GuardedListener; TrackRequests (ASGI)
"""

from reconciler.net.limits import AcceptBackoff, ConnectionTable, ListenerLimits

__all__ = ["AcceptBackoff", "ConnectionTable", "ListenerLimits"]
