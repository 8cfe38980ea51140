"""Circles and their members: a small linked-data site.

A member may live on another server: then the ``Member`` row is only the
local record of that remote user (its ``urlid`` is on the other origin).
Linking a local circle to such a member is what sends backlinks.
"""

from django.db import models

from activity_queue.federation.registry import LinkedDataModel


class Member(LinkedDataModel):
    rdf_type = "foaf:user"

    name = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name or self.urlid or f"member {self.pk}"


class Circle(LinkedDataModel):
    rdf_type = "hd:circle"

    name = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(Member, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="owned_circles")
    members = models.ManyToManyField(Member, blank=True, related_name="circles")

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name or self.urlid or f"circle {self.pk}"
