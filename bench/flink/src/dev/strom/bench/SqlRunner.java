package dev.strom.bench;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.StatementSet;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Runs a Flink SQL script, the same text Strom runs, on a local MiniCluster: the correctness and
 * performance peer of Strom's SQL.
 *
 * <p>Command line: {@code SCRIPT [--parallelism P]}. Statements are separated by {@code ;} (outside
 * quotes and comments). {@code CREATE}, {@code SET} and the like run as they come; every
 * {@code INSERT INTO} goes into one statement set, submitted as one job at the end (STREAMING
 * mode), and waited for. A {@code SELECT} or {@code EXPLAIN} prints its result to stdout.
 *
 * <p>Output: one JSON line on stdout,
 * {@code {"engine":"flink","seconds":S,"wall_seconds":W,"peak_rss_kib":K}}: {@code seconds} is the
 * job's net run time as Flink reports it (from its submission to the JobMaster to its end, the
 * span the DataStream jobs of {@link Harness} time too); {@code wall_seconds} adds planning and
 * the start of the local MiniCluster. Object reuse is on, as in {@link Harness}.
 */
public final class SqlRunner {
    private SqlRunner() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: SqlRunner SCRIPT [--parallelism P]");
            System.exit(2);
        }
        int parallelism = 2;
        for (int i = 1; i < args.length; i++) {
            if (args[i].equals("--parallelism") && i + 1 < args.length) {
                parallelism = Integer.parseInt(args[++i]);
            } else {
                System.err.println("unknown argument: " + args[i]);
                System.exit(2);
            }
        }
        String script = new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8);

        Configuration conf = new Configuration();
        conf.set(CoreOptions.DEFAULT_PARALLELISM, parallelism);
        conf.set(org.apache.flink.configuration.PipelineOptions.OBJECT_REUSE, true);
        conf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
        conf.set(RestOptions.ADDRESS, "127.0.0.1");
        EnvironmentSettings settings =
                EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf).build();
        TableEnvironment tables = TableEnvironment.create(settings);
        StatementSet inserts = tables.createStatementSet();
        int insertCount = 0;
        for (String statement : split(script)) {
            String head = statement.toUpperCase(Locale.ROOT);
            if (head.startsWith("INSERT")) {
                inserts.addInsertSql(statement);
                insertCount++;
            } else if (head.startsWith("SELECT") || head.startsWith("EXPLAIN")) {
                TableResult r = tables.executeSql(statement);
                r.print();
            } else {
                tables.executeSql(statement);
            }
        }
        double seconds = 0;
        double wallSeconds = 0;
        if (insertCount > 0) {
            long start = System.nanoTime();
            TableResult result = inserts.execute();
            org.apache.flink.api.common.JobExecutionResult job =
                    result.getJobClient().orElseThrow().getJobExecutionResult().get();
            wallSeconds = (System.nanoTime() - start) / 1e9;
            seconds = job.getNetRuntime() / 1e3;
        }
        System.out.printf(
                Locale.ROOT,
                "{\"engine\":\"flink\",\"seconds\":%.6f,\"wall_seconds\":%.6f,\"peak_rss_kib\":%d}%n",
                seconds,
                wallSeconds,
                peakRssKib());
        System.exit(0);
    }

    /** The statements of a script: split at ';' outside quotes and comments, comments dropped. */
    static List<String> split(String script) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        int n = script.length();
        for (int i = 0; i < n; i++) {
            char c = script.charAt(i);
            if (c == '-' && i + 1 < n && script.charAt(i + 1) == '-') {
                while (i < n && script.charAt(i) != '\n') {
                    i++;
                }
                cur.append('\n');
            } else if (c == '/' && i + 1 < n && script.charAt(i + 1) == '*') {
                int end = script.indexOf("*/", i + 2);
                i = end < 0 ? n : end + 1;
                cur.append(' ');
            } else if (c == '\'' || c == '"' || c == '`') {
                cur.append(c);
                i++;
                while (i < n) {
                    char d = script.charAt(i);
                    cur.append(d);
                    if (d == c) {
                        if (i + 1 < n && script.charAt(i + 1) == c) {
                            cur.append(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i++;
                }
            } else if (c == ';') {
                add(out, cur);
            } else {
                cur.append(c);
            }
        }
        add(out, cur);
        return out;
    }

    private static void add(List<String> out, StringBuilder cur) {
        String s = cur.toString().trim();
        if (!s.isEmpty()) {
            out.add(s);
        }
        cur.setLength(0);
    }

    private static long peakRssKib() {
        try {
            for (String line : Files.readAllLines(Paths.get("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", ""));
                }
            }
        } catch (Exception e) {
            // not Linux
        }
        return 0;
    }
}
