"""The HTTP signature scheme a host accepted after refusing the other one (double-knocking),
kept in its health row so that every worker starts with it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0012_pair_key")]

    operations = [
        migrations.AddField(
            model_name="host",
            name="signature_scheme",
            field=models.CharField(
                blank=True, choices=[("cavage", "draft-cavage"), ("rfc9421", "RFC 9421")],
                help_text="the HTTP signature scheme the host accepted after refusing the other "
                          "one; deliveries start with it (blank: SIGNATURE_SCHEME)",
                max_length=16),
        ),
    ]
