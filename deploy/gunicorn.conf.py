"""Gunicorn settings for the web process, read from the environment.

    gunicorn --config deploy/gunicorn.conf.py config.wsgi:application

Run it from the project folder (gunicorn puts the working directory on the import
path before it reads this file). A value that cannot be parsed stops start-up with
an error naming the variable, as the Django settings do.

| variable                  | default       | meaning                                      |
|---------------------------|---------------|----------------------------------------------|
| GUNICORN_BIND             | 0.0.0.0:8000  | address:port, or unix:/run/scheduler/web.sock |
| GUNICORN_WORKERS          | 2 x CPUs + 1  | worker processes                             |
| GUNICORN_THREADS          | 1             | threads per worker; above 1 uses gthread     |
| GUNICORN_TIMEOUT          | 30            | seconds before a silent worker is restarted  |
| GUNICORN_GRACEFUL_TIMEOUT | 30            | seconds to finish requests on stop or reload |
| GUNICORN_KEEPALIVE        | 5             | seconds a keep-alive connection waits        |
| GUNICORN_MAX_REQUESTS     | 1000          | requests before a worker is renewed; 0: never |
| FORWARDED_ALLOW_IPS       | 127.0.0.1,::1 | proxies whose X-Forwarded-* headers count    |
"""

import os

from config.env import env_bool, env_int, env_str

bind = [env_str("GUNICORN_BIND", "0.0.0.0:8000")]
workers = env_int("GUNICORN_WORKERS", 2 * len(os.sched_getaffinity(0)) + 1, minimum=1)
threads = env_int("GUNICORN_THREADS", 1, minimum=1)
timeout = env_int("GUNICORN_TIMEOUT", 30, minimum=1)
# Each process manager's stop timeout for web is longer than this (see deploy/README.md).
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
keepalive = env_int("GUNICORN_KEEPALIVE", 5, minimum=0)
# Renewing workers now and then bounds slow memory growth; the jitter keeps them from
# all restarting at once.
max_requests = env_int("GUNICORN_MAX_REQUESTS", 1000, minimum=0)
max_requests_jitter = max_requests // 10

# X-Forwarded-Proto (and -For) are believed only from these addresses; "*" trusts any
# peer, which is right only when nothing but the proxy can reach this port.
forwarded_allow_ips = env_str("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs go to the process manager: the access log to stdout, gunicorn's own to stderr.
# The Host header says which tenant a request was for.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s %({host}i)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Workers touch a heartbeat file; on a container's overlay disk that write can stall
# long enough to look like a hung worker, so use memory when there is /dev/shm.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Gunicorn's runtime control socket is not used here; it would need a writable home.
control_socket_disable = True

# With JSON logs (LOG_FORMAT, defaulting as the Django settings do: json unless DEBUG),
# gunicorn's own lines and the access log are JSON objects too, so web writes one format.
if env_str("LOG_FORMAT", "plain" if env_bool("DEBUG", False) else "json") == "json":
    logconfig_dict = {
        "root": {"level": "INFO", "handlers": ["error_console"]},
        "formatters": {"json": {"()": "config.logs.JsonFormatter"}},
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "access_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["error_console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {
                "handlers": ["access_console"],
                "level": "INFO",
                "propagate": False,
            },
        },
    }
