"""manage.py add_scene: add a scene (a local image, a storage key, or a generated collage)."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from labeling.ingest.uploads import UploadError, add_collage_scene, add_scene
from labeling.jobs.follow import run_job_here
from labeling.management.command_support import (
    LabelingCommand,
    add_upload_arguments,
    get_member_project,
)


class Command(LabelingCommand):
    help = """Add a scene to a project: a local IMAGE (PNG, JPEG, TIFF), --key (an image in the
    configured storage) or --collage TILES (a photomosaic of --target, default the demo Mona
    Lisa, from the tile library TILES: 'demo' or the id of a ready dataset). --ground-truth takes
    a CSV (label,x,y,w,h) or COCO JSON of boxes. By default the preparation is queued for an RQ
    worker; with --wait it runs here with a progress bar. Either way, deep-zoom tiles and a first
    scoring with the current model are then queued for the workers (`manage.py rqworker default
    score`)."""

    def add_arguments(self, parser):
        add_upload_arguments(parser, "image", "Local image file", what="Scene",
                             wait_help="Prepare the scene here with a progress bar")  # fmt: skip
        parser.add_argument("--collage", default="", metavar="TILES", help="…or a collage")
        parser.add_argument("--target", default="", help="Collage target picture (local)")
        parser.add_argument("--cols", type=int, default=80, help="Collage tiles per row")
        parser.add_argument("--seed", type=int, default=0, help="Collage random seed")
        parser.add_argument("--ground-truth", default="", help="CSV or COCO JSON of boxes")

    def handle(self, *args, **opts):
        project = get_member_project(opts["user"], opts["project"])
        given = [bool(opts["image"]), bool(opts["key"]), bool(opts["collage"])]
        if sum(given) != 1:
            raise CommandError("Give one of: a local IMAGE, --key STORAGE_KEY or --collage TILES.")
        if opts["collage"] and opts["ground_truth"]:
            raise CommandError("A collage brings its own ground truth; drop --ground-truth.")
        if not opts["collage"] and opts["target"]:
            raise CommandError("--target only goes with --collage.")
        try:
            if opts["collage"]:
                if not 2 <= opts["cols"] <= 400:
                    raise UploadError(f"--cols must be between 2 and 400, not {opts['cols']}.")
                scene, record = add_collage_scene(
                    project, tiles=opts["collage"], target_path=opts["target"] or None,
                    cols=opts["cols"], seed=opts["seed"], name=opts["name"], inline=opts["wait"],
                )  # fmt: skip
            else:
                scene, record = add_scene(
                    project, path=opts["image"] or None, key=opts["key"], name=opts["name"],
                    ground_truth=opts["ground_truth"] or None, inline=opts["wait"],
                )  # fmt: skip
        except UploadError as exc:
            raise CommandError(str(exc)) from None
        scene_id, name = scene.pk, scene.name
        if opts["wait"]:
            run_job_here(record, f"preparing {name}", self.stderr)
        if opts["json"]:
            from labeling.models import Scene
            from labeling.views.data import scene_state

            done = Scene.objects.filter(pk=scene_id).first()
            out = scene_state(done) if done else {"id": scene_id}
            self.stdout.write(json.dumps({**out, "job": record.pk}))
            return
        if opts["wait"]:
            scene.refresh_from_db()
            self.stdout.write(
                self.style.SUCCESS(
                    f"Scene #{scene.pk} {scene.name!r}: {scene.width} x {scene.height} px ready; "
                    "deep-zoom tiles and scoring queued for the workers"
                )
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(f"Scene #{scene_id} {name!r} queued (job #{record.pk})")
            )
        self.stdout.write(
            f"follow it at /projects/{project.pk}/scenes/{scene_id}/import/ or "
            f"GET /api/projects/{project.pk}/scenes/{scene_id}/import"
        )
