"""The parts of `manage.py bench_beat`, the side-by-side benchmark of the stock and the
project's beat schedulers (issue 7):

  rows       bench PeriodicTasks written and removed in bulk with SQL (a fleet);
  broker     the reader that pops what beat publishes and stamps it;
  processes  celery beat as a child process: CPU, memory, stop and kill;
  figures    lag, lost and duplicate slots against the fleet's grid, and the table;
  workloads  steady, herd, change pickup and failover, each within a time budget.
"""
