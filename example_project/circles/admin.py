from django.contrib import admin

from .models import Circle, Member


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ("name", "urlid")
    search_fields = ("name", "urlid")


@admin.register(Circle)
class CircleAdmin(admin.ModelAdmin):
    list_display = ("name", "urlid", "owner")
    search_fields = ("name", "urlid")
    filter_horizontal = ("members",)
