from django.urls import path

from . import views

urlpatterns = [
    path("members/<int:pk>/", views.member_document, name="member"),
    path("circles/<int:pk>/", views.circle_document, name="circle"),
    path("demo/members/", views.new_member),
    path("demo/circles/", views.new_circle),
    path("demo/circles/<int:pk>/", views.change_circle),
    path("demo/circles/<int:pk>/delete/", views.delete_circle),
    path("demo/state/", views.state),
]
