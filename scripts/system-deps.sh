#!/usr/bin/env bash
# Debian packages the tests use beyond Python: Java (Spark), Chromium + its driver (the
# browser test of the Airflow UI), docker-compose v1 (validates docker-compose.yaml
# against the Compose schema; no Docker daemon needed) and shellcheck (lints the ec2
# nodes' user data, rendered; its test fails without it). Installs only what is missing,
# and only where it can (root with apt-get); otherwise says what to install.
set -euo pipefail

declare -A wanted=(
    [java]=openjdk-17-jre-headless
    [chromium]=chromium
    [chromedriver]=chromium-driver
    [docker-compose]=docker-compose
    [shellcheck]=shellcheck
)
missing=()
for cmd in "${!wanted[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "system-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
    echo "system-deps: the tests that need them are skipped (shellcheck's fails), saying so" >&2
fi
