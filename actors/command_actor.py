"""One actor per command: it decides whether a turn may run it, and where it runs.

Every turn that concerns a command comes here (`RunTurn`), a plain call as much as a
dialog's start or step: the actor applies the command's policy (`actors.access.
authorize`: admins only, the groups of `[access.commands]`; a refusal is logged and
counted), then runs the turn with the runner (`actors/runner.py`). A `quick` command
(it computes its reply from its arguments and cannot reach memory) and a refusal run
right here, which saves waking a worker; anything else runs on a worker, in the
conversation's lane, so a command that takes ten seconds holds one worker thread and
delays nobody else, not even another person calling the same command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.access import authorize
from actors.messages import RunTurn
from actors.pool import Dispatcher
from actors.supervision import SupervisedPooledActor

if TYPE_CHECKING:
    from actors.services import Services
    from commands.base import Command


class CommandActor(SupervisedPooledActor):
    def __init__(self, dispatcher: Dispatcher, command: Command, services: Services) -> None:
        super().__init__(dispatcher)
        self.command = command
        self.services = services

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, RunTurn):
            return None
        turn, command, services = message.turn, self.command, self.services
        refusal = authorize(
            services.settings,
            services.metrics,
            command.name,
            admin_only=command.admin_only,
            event=turn.event,
            is_admin=turn.is_admin(),
        )
        if refusal is not None or command.quick:
            turn.run_here(refusal)
        else:
            turn.run_on_worker()
        return None
