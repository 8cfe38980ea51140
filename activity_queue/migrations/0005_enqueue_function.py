"""Kept so that the migration graph stays whole: the function it made is replaced by
0009's versioned one."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0004_queue_fillfactor")]

    operations = []
