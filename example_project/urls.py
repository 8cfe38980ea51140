from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("activity_queue.urls")),  # the inbox, at inbox/
    path("", include("example_project.circles.urls")),
]
