"""The review area's services, one concern per module; nothing here knows about HTTP (the views
in labeling/views/api.py call them and turn ``ReviewError`` into a 400). Import from the module
you use:

- ``annotations``: recording annotations (checks, idempotent by client_id, undo), their JSON
- ``queue``: strategies, runs ranked per strategy, the next window under a Redis lease
- ``feed``: the detections feed the viewer draws (columns, gzip payload, ETag)
- ``exports``: annotation exports (COCO JSON, CSV)
- ``crops``: window crops for the queue, as PNG
- ``cache``: the process-memory LRU the queue's rankings and the feed share
- ``common``: ``ReviewError``, the pixel-number parser, compact JSON bytes
"""
