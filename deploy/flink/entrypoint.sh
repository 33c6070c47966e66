#!/usr/bin/env bash
# Start a Flink process with facerec's configuration.
#
# FLINK_CONF_DIR points at flink-conf/ (mounted read-only by docker-compose.yml). The stock
# /docker-entrypoint.sh applies FLINK_PROPERTIES (container-specific settings: addresses,
# checkpoint directory) to $FLINK_HOME/conf, so copy flink-conf/ there first and run Flink
# from that copy: the repository's file stays untouched and FLINK_PROPERTIES win.
# Anything but jobmanager/taskmanager is run as is (facerec api, facerec ingest, ...).
set -euo pipefail

case "${1:-}" in
  jobmanager|taskmanager|standalone-job)
    src="${FLINK_CONF_DIR:-/opt/facerec/flink-conf}"
    if [ "$src" != "$FLINK_HOME/conf" ]; then
      cp -f "$src"/* "$FLINK_HOME/conf/"
    fi
    export FLINK_CONF_DIR="$FLINK_HOME/conf"
    if [ "$1" = "taskmanager" ]; then
      # flink-conf says localhost; each TaskManager container registers its own address
      FLINK_PROPERTIES="${FLINK_PROPERTIES:-}"$'\n'"taskmanager.host: $(hostname -i | awk '{print $1}')"
      export FLINK_PROPERTIES
    fi
    exec /docker-entrypoint.sh "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
