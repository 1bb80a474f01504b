"""bench_review on the default database (SQLite, no COPY): its annotation loader, the step that
ended `make bench` on a fresh clone with an error row ("'SQLiteCursorWrapper' object has no
attribute 'copy'"), runs there at a tiny size, in a process of its own on a fresh SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from bench import bench_review
bench_review.setup_django()  # migrates the fresh SQLite file
from django.contrib.auth.models import User
from django.db import connection
from labeling.models import Annotation, Project, Scene
project = Project.objects.create(name="bench on sqlite")
user = User.objects.create_user("reviewer")
scene = Scene.objects.create(project=project, name="s", image_key="-", width=96, height=96)
places = [(scene.pk, x, y, 32, 32) for y in range(0, 65, 16) for x in range(0, 65, 16)]
seconds = bench_review.load_annotations(project, [scene], places, user, seed=0)
rows = Annotation.objects.filter(project=project, kind="review", source="api")
print(json.dumps({"vendor": connection.vendor, "rows": rows.count(), "places": len(places),
                  "seconds": seconds, "labels": sorted(set(rows.values_list("label", flat=True)))}))
"""


def test_the_review_bench_loads_annotations_on_sqlite(tmp_path, redis_conn):
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "STORAGE_URL": str(tmp_path / "storage"),
        "REDIS_URL": str(settings.REDIS_URL),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["vendor"] == "sqlite"
    assert out["rows"] == out["places"] == 25 and out["seconds"] > 0
    assert set(out["labels"]) <= {"car", "boat", "negative"}
