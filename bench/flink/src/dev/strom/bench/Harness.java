package dev.strom.bench;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.ExecutionOptions;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Shared driver for all benchmark jobs.
 *
 * <p>Command line: {@code --events N --parallelism P [--state heap|rocksdb]} plus job-specific
 * options (e.g. {@code --seed S} for the Nexmark jobs). Numbers may contain '_' separators.
 *
 * <p>Execution: the job's DataStream topology is built on a {@link StreamExecutionEnvironment},
 * turned into a JobGraph, and submitted to a local {@link MiniCluster} (1 TaskManager with P
 * slots) that was started <em>before</em> the clock starts. {@code seconds} is the wall time of
 * {@code MiniCluster.executeJobBlocking} only: job submission, scheduling, deployment, running to
 * completion on the bounded input, and reporting the result. MiniCluster start-up/shutdown and
 * JVM start-up are excluded.
 *
 * <p>Settings (identical for every job): STREAMING runtime mode, object reuse enabled, generic
 * (Kryo) types disabled, no checkpointing; state backend "hashmap" (--state heap) or "rocksdb" (EmbeddedRocksDBStateBackend,
 * Flink defaults: managed memory, RocksDB timers).
 *
 * <p>Output: exactly one JSON line on stdout, e.g.
 * {@code {"job":"windowed-count","events":2000000,"seconds":1.234,"events_per_sec":1620745.5,
 * "results":4000,"checksum":123,"peak_rss_kib":456789,"parallelism":2,"state":"heap"}}.
 * {@code checksum} is the wrapping 64-bit sum defined by each job, printed as an UNSIGNED decimal
 * (i.e. the u64 bit pattern). {@code peak_rss_kib} is VmHWM of this JVM (whole process, read at
 * the end; includes the MiniCluster).
 */
public final class Harness {
    public final long events;
    public final int parallelism;
    /** "heap" or "rocksdb". */
    public final String state;

    private final Map<String, String> extra;

    private Harness(long events, int parallelism, String state, Map<String, String> extra) {
        this.events = events;
        this.parallelism = parallelism;
        this.state = state;
        this.extra = extra;
    }

    /**
     * Parses the common options; {@code extraOptions} lists the job-specific option names (without
     * "--") that take a value. Unknown options abort with usage.
     */
    public static Harness parse(String job, String[] args, String... extraOptions) {
        long events = -1;
        int parallelism = 2;
        String state = "heap";
        Map<String, String> extra = new LinkedHashMap<>();
        try {
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                String v;
                int eq = a.indexOf('=');
                if (a.startsWith("--") && eq > 0) {
                    v = a.substring(eq + 1);
                    a = a.substring(0, eq);
                } else if (a.equals("-h") || a.equals("--help")) {
                    usage(job, extraOptions, null);
                    return null; // unreachable
                } else {
                    if (i + 1 >= args.length) {
                        usage(job, extraOptions, "missing value for " + a);
                    }
                    v = args[++i];
                }
                switch (a) {
                    case "--events":
                        events = parseLong(v);
                        break;
                    case "--parallelism":
                        parallelism = (int) parseLong(v);
                        break;
                    case "--state":
                        state = v.toLowerCase(Locale.ROOT);
                        if (state.equals("hashmap")) {
                            state = "heap";
                        }
                        if (!state.equals("heap") && !state.equals("rocksdb")) {
                            usage(job, extraOptions, "--state must be heap or rocksdb, got " + v);
                        }
                        break;
                    default:
                        boolean known = false;
                        for (String o : extraOptions) {
                            if (a.equals("--" + o)) {
                                extra.put(o, v);
                                known = true;
                            }
                        }
                        if (!known) {
                            usage(job, extraOptions, "unknown option " + a);
                        }
                }
            }
        } catch (NumberFormatException e) {
            usage(job, extraOptions, "bad number: " + e.getMessage());
        }
        if (events < 0) {
            usage(job, extraOptions, "--events N is required");
        }
        if (events == 0) {
            // DataGeneratorSource(count = 0) still emits index 0 (its range is [0, count - 1]).
            usage(job, extraOptions, "--events must be >= 1");
        }
        if (parallelism < 1) {
            usage(job, extraOptions, "--parallelism must be >= 1");
        }
        return new Harness(events, parallelism, state, extra);
    }

    private static long parseLong(String s) {
        return Long.parseLong(s.replace("_", ""));
    }

    private static void usage(String job, String[] extraOptions, String error) {
        StringBuilder sb = new StringBuilder();
        if (error != null) {
            sb.append("error: ").append(error).append('\n');
        }
        sb.append("usage: ").append(job)
                .append(" --events N [--parallelism P (default 2)] [--state heap|rocksdb (default heap)]");
        for (String o : extraOptions) {
            sb.append(" [--").append(o).append(" V]");
        }
        System.err.println(sb);
        System.exit(error == null ? 0 : 2);
    }

    public String extra(String name) {
        return extra.get(name);
    }

    public long extraLong(String name, long dflt) {
        String v = extra.get(name);
        return v == null ? dflt : parseLong(v);
    }

    private Configuration flinkConfig() {
        Configuration conf = new Configuration();
        conf.set(ExecutionOptions.RUNTIME_MODE, RuntimeExecutionMode.STREAMING);
        conf.set(CoreOptions.DEFAULT_PARALLELISM, parallelism);
        conf.set(PipelineOptions.OBJECT_REUSE, true);
        // Fail instead of silently falling back to Kryo: every record/state type must have an
        // efficient Flink serializer (tuples, POJOs, primitives).
        conf.set(PipelineOptions.GENERIC_TYPES, false);
        conf.set(StateBackendOptions.STATE_BACKEND, state.equals("rocksdb") ? "rocksdb" : "hashmap");
        // Random REST port so concurrent runs never collide; bind to loopback only.
        conf.set(RestOptions.BIND_PORT, "0");
        conf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
        conf.set(RestOptions.ADDRESS, "127.0.0.1");
        return conf;
    }

    /** A fresh environment carrying the benchmark settings; jobs add their topology to it. */
    public StreamExecutionEnvironment env() {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(flinkConfig());
        env.setParallelism(parallelism);
        env.setRuntimeMode(RuntimeExecutionMode.STREAMING);
        return env;
    }

    /**
     * Submits the topology built on {@code env} to a freshly started MiniCluster, times it, and
     * prints the result JSON line. Exits the JVM (status 0 on success, 1 on failure).
     */
    public void run(String jobName, StreamExecutionEnvironment env) {
        int status = 0;
        MiniCluster cluster = null;
        try {
            ChecksumSink.reset();
            JobGraph jobGraph = env.getStreamGraph().getJobGraph();
            jobGraph.setJobConfiguration(mergeJobConfig(jobGraph.getJobConfiguration()));

            MiniClusterConfiguration mcc = new MiniClusterConfiguration.Builder()
                    .setConfiguration(flinkConfig())
                    .setNumTaskManagers(1)
                    .setNumSlotsPerTaskManager(parallelism)
                    .build();
            cluster = new MiniCluster(mcc);
            cluster.start();

            long t0 = System.nanoTime();
            JobExecutionResult result = cluster.executeJobBlocking(jobGraph);
            long t1 = System.nanoTime();

            double seconds = (t1 - t0) / 1e9;
            long rows = ChecksumSink.rows();
            long checksum = ChecksumSink.checksum();
            long rss = peakRssKib();
            String json = String.format(Locale.ROOT,
                    "{\"job\":\"%s\",\"events\":%d,\"seconds\":%.6f,\"events_per_sec\":%.1f,"
                            + "\"results\":%d,\"checksum\":%s,\"peak_rss_kib\":%d,"
                            + "\"parallelism\":%d,\"state\":\"%s\",\"flink_net_runtime_ms\":%d}",
                    jobName, events, seconds, seconds > 0 ? events / seconds : 0.0,
                    rows, Long.toUnsignedString(checksum), rss,
                    parallelism, state, result.getNetRuntime());
            System.out.println(json);
            System.out.flush();
        } catch (Throwable t) {
            System.err.println("job " + jobName + " failed:");
            t.printStackTrace();
            status = 1;
        } finally {
            if (cluster != null) {
                try {
                    cluster.close();
                } catch (Throwable ignored) {
                    // shutting down anyway
                }
            }
        }
        System.exit(status);
    }

    private Configuration mergeJobConfig(Configuration jobConf) {
        Configuration merged = new Configuration();
        if (jobConf != null) {
            merged.addAll(jobConf);
        }
        merged.addAll(flinkConfig());
        return merged;
    }

    /** VmHWM (peak resident set size) of this process in KiB, or -1 if unavailable. */
    public static long peakRssKib() {
        try {
            for (String line : Files.readAllLines(Paths.get("/proc/self/status"), StandardCharsets.US_ASCII)) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.substring(6).trim().split("\\s+")[0]);
                }
            }
        } catch (IOException | RuntimeException ignored) {
            // not on Linux
        }
        return -1;
    }
}
