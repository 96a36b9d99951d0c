from django.urls import path

from scheduling import views

urlpatterns = [
    path("", views.dashboard, name="home"),
    path("runs/", views.run_history, name="run_history"),
    path("sync/settings/", views.sync_settings, name="sync_settings"),
    path("sync/pause/", views.sync_pause, name="sync_pause"),
    path("sync/resume/", views.sync_resume, name="sync_resume"),
    path("sync/run-now/", views.sync_run_now, name="sync_run_now"),
    path("sync/schedule/pause/", views.sync_schedule_pause, name="sync_schedule_pause"),
    path("sync/schedule/resume/", views.sync_schedule_resume, name="sync_schedule_resume"),
    path("sync/history/", views.schedule_history, name="schedule_history"),
]
