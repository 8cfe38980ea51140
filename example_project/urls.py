from importlib.util import find_spec

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("example_project.circles.urls")),
]
if find_spec("activity_queue.urls") is not None:  # the inbox, at inbox/
    urlpatterns.append(path("", include("activity_queue.urls")))
