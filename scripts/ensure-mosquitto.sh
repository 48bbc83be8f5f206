# Sourced by scripts/check and scripts/demo: install Debian's mosquitto, its clients and openssl
# when any of them is missing (the tests and the demo's embedded broker run a real mosquitto on
# 127.0.0.1; the lab-broker tests make TLS certificates with openssl and passwords with
# mosquitto_passwd, and fail without them).
if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } \
  || ! command -v mosquitto_passwd >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  echo "== installing mosquitto mosquitto-clients openssl"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
fi
