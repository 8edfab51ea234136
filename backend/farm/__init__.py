"""Work across machines: one front (the HTTP server) holds a fair queue and dispatches jobs
to long-lived worker actors on a Ray cluster, one per GPU.

  scheduler.py  FairQueue: priorities, round robin between users, a running limit per user
  kinds.py      what a worker can run: a Conjure job, or a trivial timed job for farm checks
  worker.py     the worker actor: runs a job, streams its events and changed files back
  front.py      Farm: the pool, dispatch, requeue when a worker or node dies, cancel, status
  simulate.py   the scheduling simulation (many jobs, many users, trivial jobs)
"""
