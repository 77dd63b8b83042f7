"""What the tests (and the benchmarks) share: the live stacks, real job processes, process and
/proc helpers, polling with deadlines, the model-service stubs, sample configs and statuses."""
