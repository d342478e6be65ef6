"""`Event` and `EventType` now live in core/event.py, the floor both layers import."""

# moved to core.event; kept for the modules being rewritten
from core.event import Event, EventType, new_id

__all__ = ["Event", "EventType", "new_id"]
