"""The benchmark suite for polyai_async: ``python -m benchmarks`` (``--smoke`` for a short run).

- ``_workload``: one measurement (a contender, a number of conversations, a concurrency), run in
  a fresh client process so its CPU time and peak RSS are its own;
- ``_server``: the fake server in its own process, with its CPU time read through psutil;
- ``_suite``: the phases (contenders interleaved, scale, fault run) and their summaries;
- ``_report``: the JSON, the table, the scale chart.
"""
