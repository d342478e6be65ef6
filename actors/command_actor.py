"""One actor per command: it decides whether a turn may run it, and where it runs.

Every turn of a command comes here (`RunTurn`): a call, a dialog's start or step. The
actor applies the command's policy (`actors.access.authorize`), then runs the turn with
the runner (`actors/runner.py`): a `quick` command and a refusal right here, which saves
waking a worker; anything else on a worker, in the conversation's lane, so a slow
command holds one worker and delays nobody else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.access import authorize
from actors.messages import RunTurn
from actors.pool import Dispatcher
from actors.supervision import SupervisedPooledActor

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from commands.base import Command


class CommandActor(SupervisedPooledActor):
    def __init__(self, dispatcher: Dispatcher, command: Command, runtime: Runtime) -> None:
        super().__init__(dispatcher)
        self.command = command
        self.runtime = runtime

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, RunTurn):
            return None
        turn, command, runtime = message.turn, self.command, self.runtime
        refusal = None
        if command.admin_only or command.name in runtime.settings.access.commands:
            # Open to everyone otherwise: no need to look the person up.
            refusal = authorize(
                runtime.settings,
                runtime.metrics,
                command.name,
                admin_only=command.admin_only,
                event=turn.event,
                is_admin=turn.is_admin(),
                linked=runtime.identities.shared_accounts(runtime.settings, turn.event),
            )
        if refusal is not None or command.quick:
            turn.run_here(refusal)
        else:
            turn.run_on_worker()
        return None
