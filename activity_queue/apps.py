import os
import sys
from importlib.util import find_spec

from django.apps import AppConfig
from django.core.signals import request_started


class ActivityQueueConfig(AppConfig):
    name = "activity_queue"
    verbose_name = "Activity queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # registers the system checks
        from .conf import get_config
        from .federation import backlinks, dispatch  # noqa: F401  (connects the model signals)
        from .sending import chores
        from .sending.backends import thread

        chores.register("inbox discovery", chores.Chore(poll=dispatch.poll,
                                                        run=dispatch.resolve_due))
        thread.refusal = lambda: checks.describe(checks.refusals())
        config = get_config()
        if config.METRICS is True and find_spec("prometheus_client") is not None:
            from .operations import metrics  # optional; without it, check says E022

            metrics.register()
        mode = thread.autostart_mode(sys.argv, os.environ, testing=thread.under_tests(),
                                     autostart=config.AUTOSTART, backend=config.BACKEND)
        if mode is None:
            return
        if mode == "now":
            thread.allow_autostart()
            thread.start()
        else:
            request_started.connect(thread.ensure_started, dispatch_uid="activity_queue.start")
