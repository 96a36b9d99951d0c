from django.urls import path

from notifications import views

urlpatterns = [
    path("digest/", views.my_digest, name="my_digest"),
    path("digest/preview/", views.digest_preview, name="digest_preview"),
]
