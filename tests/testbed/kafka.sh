# shellcheck shell=bash
# A real Apache Kafka broker for the test bed: one JVM that is both KRaft controller and broker,
# PLAINTEXT on 127.0.0.1. Sourced by up after lib.sh; defines functions and runs nothing.
#
#   kafka_install   fetches Kafka's jars (broker, CLI tools, logging) to $CACHE/kafka-<version>/libs
#   kafka_start     formats a fresh log dir in $RUN/kafka, starts the broker, waits until it serves
#                   metadata, and appends STROM_TESTBED_KAFKA_BOOTSTRAP and STROM_TESTBED_KAFKA_LIBS
#                   to $RUN/env
#
# Tests run Kafka's own CLI classes against it: java -cp "$STROM_TESTBED_KAFKA_LIBS/*" CLASS ...

KAFKA_DIR="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_DIR/libs"

# Fetches the jars with Maven, once: a throwaway pom names the broker, the tools and the log4j2
# binding; `dependency:copy-dependencies` puts them and everything they need in libs/ (92 jars,
# 55 MB). Maven's local repository is $KAFKA_DIR/m2 (not ~/.m2), so removing $KAFKA_DIR removes
# everything this fetched.
kafka_install() {
  [ -f "$KAFKA_DIR/.installed" ] && return 0
  mkdir -p "$KAFKA_DIR"
  (
    flock 9
    [ -f "$KAFKA_DIR/.installed" ] && exit 0
    log "fetching Kafka $KAFKA_VERSION's jars with Maven into $KAFKA_LIBS"
    cat >"$KAFKA_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>strom.testbed</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- the broker and controller: main class kafka.Kafka; kafka.tools.StorageTool formats -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- org.apache.kafka.tools.*: topics, console producer and consumer, consumer groups -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- Kafka logs through SLF4J 1.7 and brings log4j-core; this binds the two, as Kafka's own
         distribution does -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$KAFKA_LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    rm -rf "$KAFKA_LIBS.tmp"
    if ! mvn -q -B -f "$KAFKA_DIR/pom.xml" -Dmaven.repo.local="$KAFKA_DIR/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" \
      >"$KAFKA_DIR/mvn.log" 2>&1; then
      log "mvn failed; its output ($KAFKA_DIR/mvn.log):"
      cat "$KAFKA_DIR/mvn.log" >&2
      exit 1
    fi
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    touch "$KAFKA_DIR/.installed"
  ) 9>"$KAFKA_DIR/.lock"
}

# Starts the broker on two free ports (PLAINTEXT for clients, CONTROLLER for KRaft) with a fresh
# cluster in $RUN/kafka, and waits until it answers a metadata request (the topics tool lists
# topics).
kafka_start() {
  local p_broker p_controller dir="$RUN/kafka" cluster_id java_opts
  read -r p_broker p_controller < <(free_ports 2)
  [ -n "${p_controller:-}" ] || { log "could not get free ports from the kernel"; return 1; }
  rm -rf "$dir"
  mkdir -p "$dir/data"
  # A single voter in KIP-853 form (controller.quorum.bootstrap.servers, `format --standalone`), as
  # Kafka 4's own config/server.properties and quickstart do.
  # Small thread pools and 5 offsets partitions (not 50): the first consumer group creates
  # __consumer_offsets, and every partition of it is work on a 2-core machine.
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$p_controller
listeners=PLAINTEXT://127.0.0.1:$p_broker,CONTROLLER://127.0.0.1:$p_controller
advertised.listeners=PLAINTEXT://127.0.0.1:$p_broker,CONTROLLER://127.0.0.1:$p_controller
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.network.threads=2
num.io.threads=2
background.threads=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  # Kafka's distribution logs through config/log4j2.yaml; this is its console part, at INFO.
  cat >"$dir/log4j2.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  # A random cluster id: 16 bytes, URL-safe base64 without padding, as Kafka's Uuid prints one (and,
  # like Kafka's, never starting with '-', which its CLI would take for an option).
  cluster_id="$(python3 -c 'import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break')"
  java_opts=(-Xms64m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$dir/log4j2.properties")
  # shellcheck disable=SC2034 # read by up's failure report
  current=kafka
  if ! java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
    -t "$cluster_id" -c "$dir/server.properties" >"$RUN/logs/kafka-format.log" 2>&1; then
    log "formatting Kafka's log dir failed:"
    cat "$RUN/logs/kafka-format.log" >&2
    return 1
  fi
  start kafka java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties"
  wait_for kafka "\"Kafka Server started\" in its log" \
    grep -q 'Kafka Server started' "$RUN/logs/kafka.log"
  wait_for kafka "topic list from 127.0.0.1:$p_broker" \
    java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$KAFKA_LIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$p_broker" --list
  cat >>"$RUN/env" <<EOF
export STROM_TESTBED_KAFKA_BOOTSTRAP='127.0.0.1:$p_broker'
export STROM_TESTBED_KAFKA_LIBS='$KAFKA_LIBS'
EOF
  log "Kafka $KAFKA_VERSION up at 127.0.0.1:$p_broker (KRaft controller on $p_controller)"
}

