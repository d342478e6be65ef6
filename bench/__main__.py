"""`make bench`: every benchmark, one after the other."""

import sys

from bench import (
    bench_bot,
    bench_cluster,
    bench_dialogs,
    bench_handoff,
    bench_memory,
    bench_metrics,
    bench_neighbour,
    bench_pg_memory,
    bench_scheduler,
    bench_slack,
    bench_streams,
    bench_xmpp,
)

status = bench_handoff.main([])
print()
status |= bench_bot.main(sys.argv[1:])
print()
status |= bench_memory.main([])
print()
status |= bench_pg_memory.main([])
print()
status |= bench_cluster.main([])
print()
status |= bench_metrics.main([])
print()
status |= bench_dialogs.main([])
print()
status |= bench_scheduler.main([])
print()
status |= bench_xmpp.main([])
print()
status |= bench_slack.main([])
print()
status |= bench_streams.main([])
print()
status |= bench_neighbour.main([])
sys.exit(status)
