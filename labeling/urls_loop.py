"""Routes of the loop area (see labeling/views/)."""

urlpatterns = []
