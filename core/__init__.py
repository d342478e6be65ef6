"""The floor of Harken's layers: what both `actors/` and `commands/` speak.

Values and protocols only: the `Event` (core/event.py), what a scheduled job is
(core/jobs.py), how times and delays are said to people (core/timefmt.py), the bot's
status report (core/status.py) and the `Context` protocol a command sees
(core/context.py). It imports nothing of Harken, so a command can be read, typed and
tested without the actor system (see ARCHITECTURE.md, "Layers").
"""
