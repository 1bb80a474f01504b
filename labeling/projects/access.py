"""Per-project access: a user sees only the projects they are a member of."""

from django.http import Http404

from labeling.models import Project, Scene


def projects_for(user):
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(members=user)


def project_for(user, project_id) -> Project:
    """The project if the user may see it; 404 otherwise (never reveals that it exists)."""
    try:
        return projects_for(user).get(pk=project_id)
    except (Project.DoesNotExist, ValueError, TypeError):
        raise Http404("No such project among yours.") from None


def scene_for(user, scene_id) -> Scene:
    """The scene if it belongs to one of the user's projects; 404 otherwise."""
    scene = (
        Scene.objects.select_related("project")
        .filter(pk=scene_id, project__in=projects_for(user))
        .first()
    )
    if scene is None:
        raise Http404("No such scene among your projects' scenes.")
    return scene
