"""One clock for the whole bridge: capture times, deadlines and latency all use it."""
import time

now = time.monotonic
