"""Operations commands: services, health, `call`, runbooks, watches, audit and status.

The logic lives in `commands/ops/` (registry, checks, runbooks, audit); this module is
the chat side. Everything here runs on a command worker, and whatever waits on the
network has a timeout, so a dead service delays only the person who asked about it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from datetime import datetime, timedelta

from commands.base import command
from commands.ops import audit
from commands.ops.checks import (
    DOWN,
    SLOW,
    UNCHECKED,
    UP,
    CheckResult,
    check,
    check_and_record,
    http_request,
    record_status,
)
from commands.ops.registry import (
    SERVICES_NS,
    STATUS_NS,
    CallRefused,
    ConfiguredRegistry,
    RegistryRefused,
    Service,
    normalise_call_path,
)
from commands.ops.runbooks import ArgumentRefused, bind_arguments, run, tail
from commands.when import WhenError, parse_when
from config.ops_config import TableError, check_name, check_url, split_host_port
from core.context import Context, SchedulingRefused
from core.jobs import JobInfo, JobKind
from core.timefmt import say_delay

WATCH_NS = "ops:watches"
"""The person's memory: one entry per watched service (job id, last status, since when)."""
WATCH_COMMAND = "watch-check"


def _registry(ctx: Context) -> ConfiguredRegistry:
    return ConfiguredRegistry(ctx.settings.services, ctx.team_memory(SERVICES_NS))


def _unknown_service(name: str) -> str:
    return f"I know no service `{name[:60]}`. `list services` shows them."


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def _say_result(result: CheckResult) -> str:
    if result.status == UNCHECKED:
        return f"{result.service}: not checked ({result.detail})"
    text = f"{result.service}: {result.status} ({_ms(result.latency)})"
    if result.status in (DOWN, SLOW) and result.detail:
        text += f": {result.detail}"
    return text


# --- Micro Bot parity ------------------------------------------------------------------


@command(r"^(?:hello|hi)$", usage="hello", description="Say hello.")
def hello(ctx: Context) -> str:
    who = ctx.event.display_name or ctx.user
    return f"Hello {who}! I'm {ctx.settings.bot.name}. Say `help` to see what I can do."


@command(
    r"^the\s+three\s+laws$",
    name="three-laws",
    usage="the three laws",
    description="The three laws of robotics, as the Micro Bot knew them.",
    quick=True,
)
def three_laws() -> str:
    return (
        "1. A robot may not injure a human being or, through inaction, allow a human being "
        "to come to harm.\n"
        "2. A robot must obey the orders given it by human beings except where such orders "
        "would conflict with the First Law.\n"
        "3. A robot must protect its own existence as long as such protection does not "
        "conflict with the First or Second Laws."
    )


# --- the registry --------------------------------------------------------------------


@command(r"^list\s+services$", name="list-services", usage="list services")
def list_services(ctx: Context) -> str:
    """List the services I know (from the config and registered)."""
    services = _registry(ctx).list()
    if not services:
        return (
            "I know no services yet. Admins can `register service <name> <url> "
            "[health=<path>]`, or list them under [services.<name>] in the config."
        )
    lines = [f"Services ({len(services)}):"]
    for service in services:
        tags = f" [{', '.join(service.tags)}]" if service.tags else ""
        about = f" - {service.description}" if service.description else ""
        lines.append(f"  {service.name}  {service.url or service.target}{tags}{about}")
    return "\n".join(lines)


@command(r"^get\s+service\s+(?P<name>\S+)$", name="get-service", usage="get service <name>")
def get_service(ctx: Context, name: str) -> str:
    """A service's URL, health target, tags and last known status."""
    service = _registry(ctx).get(name.lower())
    if service is None:
        return _unknown_service(name)
    lines = [f"{service.name}: {service.url or service.target}"]
    if service.description:
        lines.append(f"  about: {service.description}")
    lines.append(f"  health check: {service.target}")
    lines.append(f"  tags: {', '.join(service.tags) or 'none'}")
    lines.append(f"  from: {service.source}")
    if service.call:
        lines.append(f"  `call` may request: {', '.join(service.call)}")
    last = ctx.team_memory(STATUS_NS).get(service.name)
    if isinstance(last, dict) and "status" in last:
        ago = say_delay(timedelta(seconds=max(0.0, time.time() - float(last.get("at", 0)))))
        detail = f": {last['detail']}" if last.get("detail") else ""
        lines.append(
            f"  last known status: {last['status']} ({last.get('latency_ms', '?')} ms)"
            f"{detail}, {ago} ago"
        )
    else:
        lines.append("  last known status: not checked yet (`health <name>` checks it)")
    return "\n".join(lines)


def _options(text: str) -> dict[str, str]:
    options = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"`{word[:40]}` is not key=value")
        if key not in ("health", "tcp", "tags", "description"):
            raise ValueError(f"unknown option `{key[:20]}` (health=, tcp=, tags=)")
        options[key] = value
    return options


@command(
    r"^register\s+service\s+(?P<name>\S+)\s+(?P<url>\S+)(?P<opts>(?:\s+\S+)*)\s*$",
    name="register",
    usage="register service <name> <url> [health=<path>] [tcp=<host:port>] [tags=<a,b>]",
    admin_only=True,
)
def register(ctx: Context, name: str, url: str, opts: str) -> str:
    """Add a service at runtime (admins); it is kept across restarts."""
    name = name.lower()
    target = f"{name} {url}{opts}".strip()
    try:
        check_name("name", name)
        options = _options(opts)
    except (TableError, ValueError) as exc:
        refused = exc.problem if isinstance(exc, TableError) else str(exc)
        audit.record(ctx, "register", target, f"refused: {refused}")
        return f"I can't register that: {refused}."
    health = options.get("health", "")
    tcp = options.get("tcp", "")
    url_problem = check_url(url)
    problem: str | None = f"the URL {url_problem}" if url_problem else None
    if problem is None and health and not health.startswith("/"):
        problem = 'health= must be a path starting with "/"'
    if problem is None and tcp and split_host_port(tcp) is None:
        problem = "tcp= must be host:port"
    if problem is not None:
        audit.record(ctx, "register", target, f"refused: {problem}")
        return f"I can't register `{name}`: {problem}."
    service = Service(
        name=name,
        url=url.rstrip("/"),
        health=health,
        tcp=tcp,
        tags=tuple(t for t in options.get("tags", "").split(",") if t),
        source=f"registered by {ctx.owner}",
    )
    try:
        _registry(ctx).register(service)
    except RegistryRefused as exc:
        audit.record(ctx, "register", target, f"refused: {exc}")
        return str(exc)
    audit.record(ctx, "register", target, "registered")
    return f"Registered {name}: {service.url}, health check: {service.target}."


@command(
    r"^deregister\s+service\s+(?P<name>\S+)$",
    name="deregister",
    usage="deregister service <name>",
    admin_only=True,
)
def deregister(ctx: Context, name: str) -> str:
    """Remove a service registered at runtime (admins)."""
    name = name.lower()
    try:
        existed = _registry(ctx).deregister(name)
    except RegistryRefused as exc:
        audit.record(ctx, "deregister", name, f"refused: {exc}")
        return str(exc)
    audit.record(ctx, "deregister", name, "removed" if existed else "no such service")
    if not existed:
        return _unknown_service(name)
    ctx.team_memory(STATUS_NS).delete(name)
    return f"Deregistered {name}."


# --- health --------------------------------------------------------------------------


@command(r"^health(?:\s+(?P<name>\S+))?$", usage="health [<name>]")
def health(ctx: Context, name: str | None) -> str:
    """Check one service, or all of them in parallel: status, latency, error."""
    registry = _registry(ctx)
    if name:
        service = registry.get(name.lower())
        if service is None:
            return _unknown_service(name)
        services = [service]
    else:
        services = registry.list()
        if not services:
            return "I know no services to check. `list services` says how to add some."
    results = check_and_record(ctx, services)
    if len(results) == 1:
        return _say_result(results[0])
    up = sum(1 for r in results if r.status in (UP, SLOW))
    lines = [f"{up} of {len(results)} services up:"]
    lines += [f"  {_say_result(result)}" for result in results]
    return "\n".join(lines)


# --- call ----------------------------------------------------------------------------


MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects `call` sends or pretty-prints."""


def _json_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (JSON or not), without parsing it:
    Python's json module recurses once per level and fails beyond about a thousand."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _show_body(body: bytes, content_type: str, limit: int, truncated: bool) -> str:
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type and _json_depth(text) <= MAX_JSON_DEPTH:
        with contextlib.suppress(ValueError):  # labelled JSON, but is not: show it raw
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    if len(text) > limit or truncated:
        text = text[:limit] + f"\n[... cut to {limit:,} characters]"
    return text


@command(
    r"^call\s+(?P<name>\S+)\s+(?P<path>\S+)(?:\s+(?P<body>.+))?$",
    usage="call <service> <path> [json]",
)
def call(ctx: Context, name: str, path: str, body: str | None) -> str:
    """Send a request to a service (POST with a JSON body, else GET); allowed paths only."""
    service = _registry(ctx).get(name.lower())
    method = "POST" if body else "GET"
    if service is None:
        audit.record(ctx, "call", f"{name} {method} {path}", "refused: unknown service")
        return _unknown_service(name)
    try:
        sent = normalise_call_path(path)
    except CallRefused as exc:
        audit.record(ctx, "call", f"{name} {method} {path}", f"refused: {exc}")
        return f"I won't send `{path[:80]}` to {service.name}: {exc}. Nothing was sent."
    target = f"{name} {method} {sent}"
    if not service.may_call(sent):
        audit.record(ctx, "call", target, "refused: path not allowed")
        rules = ", ".join(f"`{rule}`" for rule in service.call) or "none"
        return f"`call` may not request `{sent[:80]}` on {service.name} (allowed: {rules})."
    data = None
    if body:
        if (depth := _json_depth(body)) > MAX_JSON_DEPTH:
            audit.record(ctx, "call", target, "refused: body nested too deeply")
            return (
                f"The body nests {depth:,} levels deep; `call` sends JSON up to "
                f"{MAX_JSON_DEPTH} levels. Nothing was sent."
            )
        try:
            data = json.dumps(json.loads(body)).encode("utf-8")
        except ValueError as exc:
            audit.record(ctx, "call", target, "refused: body is not JSON")
            return f"The body is not valid JSON ({exc}); nothing was sent."
    ops = ctx.settings.ops
    started = time.monotonic()
    try:
        response = http_request(
            service.url + sent, method=method, body=data, timeout=ops.call_timeout_seconds
        )
    except (OSError, http.client.HTTPException) as exc:
        took = time.monotonic() - started
        why = (
            f"no answer within {ops.call_timeout_seconds:g} s"
            if isinstance(exc, TimeoutError)
            else (str(exc) or type(exc).__name__)[:200]
        )
        audit.record(ctx, "call", target, f"failed: {why}")
        return f"{method} {service.name}{sent} failed after {_ms(took)}: {why}"
    took = time.monotonic() - started
    audit.record(ctx, "call", target, f"HTTP {response.status}")
    shown = _show_body(
        response.body, response.content_type, ops.reply_max_chars, response.truncated
    )
    head = f"{method} {service.name}{sent}: HTTP {response.status} {response.reason} ({_ms(took)})"
    return f"{head}\n{shown}" if shown else head


# --- runbooks ------------------------------------------------------------------------


@command(r"^runbooks$", usage="runbooks")
def runbooks(ctx: Context) -> str:
    """List the runbooks `run` can start."""
    books = ctx.settings.runbooks
    if not books:
        return "No runbooks are configured ([runbooks.<name>] in the config file)."
    lines = [f"Runbooks ({len(books)}):"]
    for book in books.values():
        args = " ".join(f"<{arg}>" for arg in book.args)
        about = f" - {book.description}" if book.description else ""
        lines.append(f"  run {book.name}{' ' + args if args else ''}{about}")
    return "\n".join(lines)


@command(r"^run\s+(?P<name>[\w.-]+)(?:\s+(?P<args>.*))?$", name="run", usage="run <runbook> [args]")
def run_runbook(ctx: Context, name: str, args: str | None) -> str:
    """Run a runbook from the config, with checked arguments; shows the exit and output."""
    book = ctx.settings.runbooks.get(name.lower())
    target = f"{name} {args or ''}".strip()
    if book is None:
        return f"There is no runbook `{name[:60]}`. `runbooks` lists them."
    try:
        argv = bind_arguments(book, args or "")
    except ArgumentRefused as exc:
        audit.record(ctx, "run", target, f"refused: {exc}")
        return str(exc)
    ops = ctx.settings.ops
    try:
        result = run(
            argv,
            timeout=book.timeout_seconds,
            progress_after=ops.runbook_progress_seconds,
            on_progress=lambda: ctx.say(
                f"`{book.name}` is running (it may take up to {book.timeout_seconds:g} s)..."
            ),
        )
    except OSError as exc:
        audit.record(ctx, "run", target, f"could not start: {exc.strerror or exc}")
        return f"`{book.name}` could not start: {exc.strerror or exc}."
    output = tail(result.output, lines=ops.runbook_tail_lines, chars=ops.reply_max_chars)
    if result.timed_out:
        outcome = f"timed out after {book.timeout_seconds:g} s, killed"
    else:
        outcome = f"exit {result.exit_code} in {result.seconds:.1f} s"
    audit.record(ctx, "run", target, outcome)
    head = f"`{book.name}` {outcome}."
    return f"{head}\n{output}" if output else f"{head} (no output)"


# --- watches -------------------------------------------------------------------------


def _watch_jobs(ctx: Context) -> dict[str, JobInfo]:
    prefix = f"{WATCH_COMMAND} "
    return {
        job.spec.text[len(prefix) :]: job
        for job in ctx.jobs()
        if job.spec.kind is JobKind.RUN and job.spec.text.startswith(prefix)
    }


def _check_now(ctx: Context, service: Service) -> CheckResult:
    ops = ctx.settings.ops
    return check(service, timeout=ops.check_timeout_seconds, slow=ops.slow_seconds)


@command(
    r"^watch\s+(?P<name>\S+)\s+(?P<every>every\s+.+)$",
    usage="watch <service> every <interval>",
)
def watch(ctx: Context, name: str, every: str) -> str:
    """Check a service regularly, and say here when it goes down, recovers or is slow."""
    name = name.lower()
    service = _registry(ctx).get(name)
    if service is None:
        return _unknown_service(name)
    if not (service.health or service.tcp):
        return f"{name} has no health path or tcp address, so there is nothing to watch."
    try:
        if name in _watch_jobs(ctx):
            return f"You already watch {name}. `unwatch {name}` first to change the interval."
        when = parse_when(
            every,
            datetime.now(ctx.timezone()),
            min_interval=ctx.settings.scheduler.min_interval_seconds,
        )
        if not when.recurring:
            return "Say how often, e.g. `watch billing every 5 minutes`."
        job = ctx.schedule_command(when, f"{WATCH_COMMAND} {name}")
    except (WhenError, SchedulingRefused) as exc:
        return str(exc)
    result = _check_now(ctx, service)
    ctx.memory_for(WATCH_NS).set(
        name, {"job": job.id, "status": result.status, "since": time.time()}
    )
    record_status(ctx, result)
    return (
        f"Watching {name} {when.description} (job {job.id}); now {_say_result(result)}. "
        "I'll say here when that changes; `unwatch " + name + "` stops it."
    )


@command(
    rf"^{WATCH_COMMAND}\s+(?P<name>\S+)$",
    name=WATCH_COMMAND,
    usage=f"{WATCH_COMMAND} <service>",
    description="What a watch runs: check a watched service; speaks only when it changed.",
    hidden=True,  # the scheduler runs it; people neither see nor type it
)
def watch_check(ctx: Context, name: str) -> str | None:
    name = name.lower()
    watches = ctx.memory_for(WATCH_NS)
    state = watches.get(name)
    service = _registry(ctx).get(name)
    if not isinstance(state, dict):
        return None  # unwatched meanwhile: nothing to say
    if service is None:
        return None  # deregistered: the watch stays quiet until unwatched
    result = _check_now(ctx, service)
    before = str(state.get("status", UP))
    since = float(state.get("since", time.time()))
    if result.status == before:
        return None  # no news is no message: repeated failures are one alert
    now = time.time()
    watches.set(name, {**state, "status": result.status, "since": now})
    record_status(ctx, result)
    lasted = say_delay(timedelta(seconds=max(0.0, now - since)))
    if result.status == DOWN:
        return f"ALERT: {name} is DOWN: {result.detail or 'no answer'}."
    if before == DOWN:
        how = "" if result.status == UP else f", but slowly ({result.detail})"
        return f"RECOVERED: {name} is up again after {lasted} down{how} ({_ms(result.latency)})."
    if result.status == SLOW:
        return f"SLOW: {name} {result.detail} (more than {ctx.settings.ops.slow_seconds:g} s)."
    return f"{name} is fast again ({_ms(result.latency)}) after {lasted} slow."


@command(r"^watches$", usage="watches")
def watches(ctx: Context) -> str:
    """List the services you watch, how often, and their status."""
    try:
        jobs = _watch_jobs(ctx)
    except SchedulingRefused as exc:
        return str(exc)
    if not jobs:
        return "You watch no services. `watch <service> every 5 minutes` starts one."
    memory = ctx.memory_for(WATCH_NS)
    lines = [f"Your watches ({len(jobs)}):"]
    for name, job in sorted(jobs.items()):
        state = memory.get(name)
        status = state.get("status", "?") if isinstance(state, dict) else "?"
        every = job.spec.schedule.split(" (")[0]
        lines.append(f"  {name}  {every}  {status}  (job {job.id})")
    return "\n".join(lines)


@command(r"^unwatch\s+(?P<name>\S+)$", usage="unwatch <service>")
def unwatch(ctx: Context, name: str) -> str:
    """Stop watching a service."""
    name = name.lower()
    try:
        job = _watch_jobs(ctx).get(name)
        if job is not None:
            ctx.cancel_job(job.id)
    except SchedulingRefused as exc:
        return str(exc)
    existed = ctx.memory_for(WATCH_NS).delete(name)
    if job is None and not existed:
        return f"You do not watch {name}. `watches` lists yours."
    return f"Stopped watching {name}."


# --- audit and status ----------------------------------------------------------------


@command(
    r"^audit(?:\s+(?P<count>\d{1,4}))?$", name="audit", usage="audit [<count>]", admin_only=True
)
def audit_trail(ctx: Context, count: str | None) -> str:
    """The latest privileged actions: who, what, when, outcome (admins)."""
    entries = audit.latest(ctx, int(count) if count else 20)
    if not entries:
        return "The audit trail is empty."
    zone = ctx.timezone()
    lines = [f"Latest {len(entries)} audit entries, newest first ({zone.key}):"]
    for entry in entries:
        when = datetime.fromtimestamp(entry.at, zone).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"  {when}  {entry.who}  {entry.action} {entry.target}: {entry.outcome}")
    return "\n".join(lines)


@command(r"^status$", usage="status")
def status(ctx: Context) -> str:
    """How I am: uptime, inputs and their state, counts."""
    report = ctx.status()
    if report is None:
        return "Status is not available here."
    m = report.metrics
    health_text = "all up" if report.healthy else "DOWN: " + ", ".join(report.down)
    inputs = ", ".join(f"{name} {state}" for name, state in report.inputs.items())

    def known(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    return "\n".join(
        [
            f"{ctx.settings.bot.name}: {health_text}; up "
            f"{say_delay(timedelta(seconds=report.uptime_seconds))}.",
            f"Inputs: {inputs}.",
            f"Messages: {sum(m.messages_in.values()):,} in, {sum(m.messages_out.values()):,} out."
            f" Commands: {sum(m.calls.values()):,} run, {sum(m.errors.values()):,} failed, "
            f"{sum(m.refusals.values()):,} refused.",
            f"Conversations: {known(report.active_conversations)} active; dialogs open: "
            f"{known(report.open_dialogs)}; jobs pending: {known(report.pending_jobs)}.",
            *(report.cluster.lines() if report.cluster else []),
        ]
    )
