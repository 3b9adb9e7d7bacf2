#!/bin/sh
# Container entrypoint.
#   web (default)  migrate the database, then serve with gunicorn on 0.0.0.0:8000
#                  (WEB_CONCURRENCY workers, default 2)
#   scheduler      run `flask jobs tick` every SCHEDULER_INTERVAL seconds (default 3600);
#                  the jobs are idempotent per day, so running hourly is safe and catches
#                  each tenant's new day soon after its midnight
#   anything else  run it as a command, e.g. `flask --app wsgi tenants create ...`
set -eu

mode="${1:-web}"

case "$mode" in
  web)
    flask --app wsgi db upgrade
    # gunicorn 25+ opens a control socket by default; nothing here uses it.
    control=""
    if python -c 'import sys, gunicorn; sys.exit(gunicorn.version_info < (25,))'; then
      control="--no-control-socket"
    fi
    # shellcheck disable=SC2086  # $control is one word or nothing
    exec gunicorn --bind 0.0.0.0:8000 \
      --workers "${WEB_CONCURRENCY:-2}" \
      --access-logfile - --error-logfile - \
      $control \
      wsgi:app
    ;;
  scheduler)
    interval="${SCHEDULER_INTERVAL:-3600}"
    heartbeat=/tmp/huitou-scheduler-heartbeat
    # Stop at once on docker stop: sleep runs in the background and `wait` is interruptible.
    trap 'exit 0' TERM INT
    echo "scheduler: running the jobs every ${interval}s"
    while :; do
      if flask --app wsgi jobs tick; then
        touch "$heartbeat"
        pause="$interval"
      else
        # e.g. the web container has not migrated a fresh database yet: try again soon.
        echo "scheduler: jobs tick failed; retrying in 300s" >&2
        pause=300
      fi
      sleep "$pause" &
      wait $!
    done
    ;;
  *)
    exec "$@"
    ;;
esac
