#!/usr/bin/env bash
# Fetches Apache Kafka's broker (org.apache.kafka:kafka_2.13, the version the chart and compose run)
# and its runtime dependencies from Maven Central into .kafka/libs, so the tests run on the broker
# production runs, with plain `java`, no Docker. Cached: a second run only checks. Without Java 17+
# or Maven it says so and stops with success: the tests then fall back to the embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."

pom=scripts/kafka/pom.xml
dest=.kafka/libs
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
stamp=.kafka/fetched-$version

if [ -f "$stamp" ] && [ -f "$dest/kafka_2.13-$version.jar" ]; then
  exit 0
fi
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "note: java or mvn missing; tests will use the embedded broker instead of Apache Kafka $version" >&2
  exit 0
fi

echo "fetching Apache Kafka $version (org.apache.kafka:kafka_2.13 and its runtime dependencies, ~45 MB) from Maven Central into $dest"
tmp=$(mktemp -d .kafka.tmp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$tmp/libs"; then
  echo "note: Maven could not fetch Apache Kafka $version (see the artifact named above); tests will use the embedded broker" >&2
  exit 0
fi
# Swap the whole folder in at once, so an interrupted fetch never leaves a half-filled classpath.
mkdir -p .kafka
rm -rf "$dest" .kafka/fetched-*
mv "$tmp/libs" "$dest"
touch "$stamp"
echo "installed $(find "$dest" -name '*.jar' | wc -l) jars in $dest"
