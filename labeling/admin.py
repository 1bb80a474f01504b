from django.contrib import admin

from labeling import models


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "negative_class",
        "window_size",
        "train_step",
        "score_step",
        "threshold",
        "engine",
        "created_at",
    )
    search_fields = ("name", "description")
    list_filter = ("engine",)
    filter_horizontal = ("members", "reviewers")


@admin.register(models.Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "status", "source", "created_at")
    search_fields = ("name", "source", "sha256", "project__name")
    list_filter = ("status", "project")


@admin.register(models.TrainingCanvas)
class TrainingCanvasAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "class_name",
        "kind",
        "width",
        "height",
        "placements",
        "weight",
    )
    search_fields = ("class_name", "storage_key", "project__name")
    list_filter = ("kind", "class_name", "project")


@admin.register(models.Scene)
class SceneAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "width", "height", "created_at")
    search_fields = ("name", "image_key", "sha256", "project__name")
    list_filter = ("project",)


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("project", "number", "engine", "status", "is_current", "created_at")
    search_fields = ("project__name", "model_key", "error")
    list_filter = ("engine", "status", "is_current", "project")


@admin.register(models.ScoringRun)
class ScoringRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "scene",
        "model_version",
        "status",
        "n_windows",
        "n_partitions",
        "spark_master",
        "finished_at",
    )
    search_fields = ("scene__name", "spark_master", "error")
    list_filter = ("status",)


@admin.register(models.Detection)
class DetectionAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "kind", "label", "score", "x", "y", "w", "h")
    search_fields = ("label", "run__scene__name")
    list_filter = ("kind", "label")


@admin.register(models.Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "scene",
        "kind",
        "label",
        "x",
        "y",
        "user",
        "created_at",
        "consumed_by",
    )
    search_fields = ("label", "kind", "user__username", "scene__name", "client_id")
    list_filter = ("kind", "label", "source", "project")

    # The history is append-only, in the admin too.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.JobRecord)
class JobRecordAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "project",
        "queue",
        "status",
        "progress_done",
        "progress_total",
        "created_at",
    )
    search_fields = ("kind", "rq_job_id", "message", "error")
    list_filter = ("status", "queue", "kind")


@admin.register(models.SimulationRun)
class SimulationRunAdmin(admin.ModelAdmin):
    list_display = ("project", "strategy", "per_cycle", "profile", "finished")
    search_fields = ("project__name", "strategy", "scene_name")
    list_filter = ("strategy", "finished", "project")


@admin.register(models.QueueSkip)
class QueueSkipAdmin(admin.ModelAdmin):
    list_display = ("project", "scene", "x", "y", "user", "created_at")
    search_fields = ("project__name", "scene__name", "user__username")
    list_filter = ("project",)
