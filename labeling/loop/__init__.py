"""The active-learning loop's services, one concern per module; nothing here knows about HTTP.
Import from the module you use:

- ``cycle``: a retrain cycle (start, its jobs' bookkeeping, promotion, rollback, metrics summary)
- ``cycle_lock``: one cycle per project at a time, across processes (a Redis lock)
- ``corrections``: corrections stick: the share of the answers a version learnt from that it now
  decides as answered
- ``metrics_view``: what the metrics page and the dashboard show of model quality per version
- ``learning_curve``: labels learnt against object F1, with simulated baselines
- ``regions``: background regions (annotations of kind ``region``) as the windows they teach
"""
