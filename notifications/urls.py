from django.urls import path

from notifications import unsubscribe_views, views, webhook_views

urlpatterns = [
    path("digest/", views.my_digest, name="my_digest"),
    path("digest/preview/", views.digest_preview, name="digest_preview"),
    path("digest/email-retry/", views.digest_email_retry, name="digest_email_retry"),
    path("unsubscribe/<str:token>/", unsubscribe_views.unsubscribe, name="unsubscribe"),
    path("webhook/", webhook_views.webhook_settings, name="webhook"),
    path("webhook/deliveries/", webhook_views.webhook_deliveries, name="webhook_deliveries"),
    path("webhook/rotate/", webhook_views.webhook_secret_rotate_view, name="webhook_rotate"),
    path("webhook/test/", webhook_views.webhook_test, name="webhook_test"),
]
