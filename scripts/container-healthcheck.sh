#!/bin/bash
# The container image's HEALTHCHECK (installed as /usr/local/bin/origin-healthcheck):
# GET /health on the origin's application listener with nothing but bash
# (/dev/tcp), since the image has no curl. Exit 0 on `200`, 1 otherwise.
#
# The address is ORIGIN_APP_LISTEN (the image sets 0.0.0.0:8080); a wildcard
# host is probed on loopback. An address set only in a --config file is not
# seen here: set ORIGIN_APP_LISTEN too (or ORIGIN_HEALTH_ADDR=host:port).
set -u
addr="${ORIGIN_HEALTH_ADDR:-${ORIGIN_APP_LISTEN:-127.0.0.1:8080}}"
port="${addr##*:}"
host="${addr%:*}"
host="${host#[}"
host="${host%]}"
case "$host" in
  "" | 0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
esac
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
IFS=' ' read -r -t 5 version status _ <&3 || exit 1
exec 3<&-
[[ "$version" == HTTP/1.* && "$status" == 200 ]]
