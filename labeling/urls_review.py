"""Routes of the review area (see labeling/views/)."""

urlpatterns = []
