from django.contrib import admin
from django.urls import include, path

from .support.site import publish

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("activity_queue.urls")),
    path("", include("example_project.circles.urls")),
    path("test-publish/", publish),
]
