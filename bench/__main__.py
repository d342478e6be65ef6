"""`make bench`: every benchmark, one after the other."""

import sys

from bench import bench_bot, bench_memory

status = bench_bot.main(sys.argv[1:])
print()
status |= bench_memory.main([])
sys.exit(status)
