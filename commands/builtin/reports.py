"""Reports sent by email: `health report to oncall@example.org`.

Checks every service Harken knows (recording their status as `health` does), adds
Harken's own `status`, and sends the table through the email input (`ctx.send`), which
decides which recipients are allowed. The reply says whether the mail went out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.base import command
from commands.ops.checks import DOWN, SLOW, UNCHECKED, UP, CheckResult, check_and_record
from commands.ops.registry import SERVICES_NS, ConfiguredRegistry
from core.context import Context, SendRefused
from core.status import StatusReport
from core.timefmt import format_time, say_delay

EMAIL_INPUT = "email"


def _latency(result: CheckResult) -> str:
    if result.status == UNCHECKED:
        return "-"
    seconds = result.latency
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def service_table(results: list[CheckResult]) -> list[str]:
    """The checks as aligned columns: service, status, latency, detail."""
    rows = [("service", "status", "latency", "detail")]
    rows += [(r.service, r.status, _latency(r), r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3]]
        ).rstrip()
        for row in rows
    ]


def bot_lines(name: str, report: StatusReport) -> list[str]:
    health = "healthy" if report.healthy else "DOWN: " + ", ".join(report.down)
    inputs = ", ".join(f"{input_name} {state}" for input_name, state in report.inputs.items())
    return [
        f"{name} itself: {health}; up {say_delay(timedelta(seconds=report.uptime_seconds))}.",
        f"Inputs: {inputs}.",
    ]


@command(
    r"^health\s+report\s+(?:to\s+)?(?P<address>\S+)$",
    name="health-report",
    usage="health report to <email>",
)
def health_report(ctx: Context, address: str) -> str:
    """Check every service and send the table by email."""
    if "@" not in address:
        return "Whom should I send it to? Say `health report to <email>`."
    services = ConfiguredRegistry(ctx.settings.services, ctx.team_memory(SERVICES_NS)).list()
    results = check_and_record(ctx, services)
    bot = ctx.settings.bot.name
    when = format_time(datetime.now(UTC), ctx.timezone())
    up = sum(1 for r in results if r.status in (UP, SLOW))
    down = sum(1 for r in results if r.status == DOWN)
    lines = [f"Health report from {bot}, {when}, asked by {ctx.event.display_name or ctx.user}", ""]
    if results:
        lines += [f"{up} of {len(results)} services up.", "", *service_table(results)]
    else:
        lines.append("No services are configured or registered.")
    report = ctx.status()
    if report is not None:
        lines += ["", *bot_lines(bot, report)]
    subject = f"{bot} health report: {up} of {len(results)} services up"
    if down:
        subject += f", {down} down"
    try:
        sent = ctx.send(input=EMAIL_INPUT, to=address, subject=subject, text="\n".join(lines))
    except SendRefused as exc:
        return f"I could not send the health report to {address}: {exc}."
    if sent.delivered:
        return f"Sent the health report to {address}."
    return f"The health report to {address} is not sent yet: {sent.note}."
