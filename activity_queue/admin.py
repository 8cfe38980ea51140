"""Admin registration. Delivery records are read-only; operators act through actions."""

from django.contrib import admin

from .models import Activity, Host, ScheduledActivity


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ScheduledActivity)
class ScheduledActivityAdmin(ReadOnlyAdmin):
    list_display = ("activity_type", "host", "object_id", "attempts", "next_attempt_at",
                    "last_status", "leased_by")
    list_filter = ("activity_type", "host")
    search_fields = ("activity_id", "inbox", "object_id")
    date_hierarchy = "created_at"


@admin.register(Activity)
class ActivityAdmin(ReadOnlyAdmin):
    list_display = ("activity_type", "direction", "status", "status_code", "host", "object_id",
                    "attempts", "resolved_at")
    list_filter = ("status", "direction", "activity_type", "host")
    search_fields = ("activity_id", "inbox", "object_id")
    date_hierarchy = "resolved_at"


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ("host", "circuit", "consecutive_failures", "paused_until", "updated_at")
