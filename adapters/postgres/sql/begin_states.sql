-- `states` runs in a short read-only transaction of its own, without JIT: the planner
-- prices every partition's lag window (a bounded index scan) as if it were large, and
-- compiling the statement would take longer than running it, however small the backlog.
BEGIN READ ONLY;
SET LOCAL jit = off;
