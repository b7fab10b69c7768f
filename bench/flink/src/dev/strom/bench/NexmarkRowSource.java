package dev.strom.bench;

import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.table.data.RowData;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * FLIP-27 source of the Nexmark rows {@code k in [0, end)} of one kind (see {@link NexmarkRows}).
 *
 * <p>Split like Strom's Nexmark source (worker/src/connectors/nexmark_source.rs): with P source
 * subtasks there are P splits, split i holding {@code k = i, i + P, i + 2P, ...} (below {@code end}),
 * assigned to subtask i. The union is exactly {@code [0, end)} whatever P, every subtask covers the
 * whole event-time range at the same pace, and {@code date_time} ascends within each subtask (so a
 * {@code WATERMARK FOR date_time AS date_time} never finds late rows). A split's state is its next
 * index, so it is checkpointable. The reader emits up to {@link Reader#BATCH} rows per
 * {@code pollNext} and no timestamps or watermarks (the planner assigns those from the DDL).
 */
final class NexmarkRowSource implements Source<RowData, NexmarkRowSource.Split, Collection<NexmarkRowSource.Split>> {
    private static final long serialVersionUID = 1L;

    private final NexmarkRows rows;
    private final long end;
    private final boolean bounded;

    NexmarkRowSource(NexmarkRows rows, long end, boolean bounded) {
        this.rows = rows;
        this.end = end;
        this.bounded = bounded;
    }

    @Override
    public Boundedness getBoundedness() {
        return bounded ? Boundedness.BOUNDED : Boundedness.CONTINUOUS_UNBOUNDED;
    }

    @Override
    public SplitEnumerator<Split, Collection<Split>> createEnumerator(SplitEnumeratorContext<Split> context) {
        int p = context.currentParallelism();
        List<Split> splits = new ArrayList<>(p);
        for (int i = 0; i < p; i++) {
            splits.add(new Split(i, i, p, end));
        }
        return new Enumerator(context, splits);
    }

    @Override
    public SplitEnumerator<Split, Collection<Split>> restoreEnumerator(
            SplitEnumeratorContext<Split> context, Collection<Split> checkpoint) {
        return new Enumerator(context, checkpoint);
    }

    @Override
    public SimpleVersionedSerializer<Split> getSplitSerializer() {
        return new SplitSerializer();
    }

    @Override
    public SimpleVersionedSerializer<Collection<Split>> getEnumeratorCheckpointSerializer() {
        return new CheckpointSerializer();
    }

    @Override
    public SourceReader<RowData, Split> createReader(SourceReaderContext context) {
        return new Reader(rows.newMaker());
    }

    /** Indices {@code next, next + step, ...} below {@code end}; {@code index} names the split. */
    static final class Split implements SourceSplit {
        final int index;
        long next;
        final long step;
        final long end;

        Split(int index, long next, long step, long end) {
            this.index = index;
            this.next = next;
            this.step = step;
            this.end = end;
        }

        @Override
        public String splitId() {
            return String.valueOf(index);
        }

        Split copy() {
            return new Split(index, next, step, end);
        }

        @Override
        public String toString() {
            return "NexmarkSplit{" + index + ": next " + next + " step " + step + " end " + end + "}";
        }
    }

    /** Assigns split i to subtask i mod P when that reader registers; no more splits after that. */
    static final class Enumerator implements SplitEnumerator<Split, Collection<Split>> {
        private final SplitEnumeratorContext<Split> context;
        private final List<Split> pending;

        Enumerator(SplitEnumeratorContext<Split> context, Collection<Split> pending) {
            this.context = context;
            this.pending = new ArrayList<>(pending);
        }

        @Override
        public void start() {}

        @Override
        public void handleSplitRequest(int subtaskId, String requesterHostname) {}

        @Override
        public void addSplitsBack(List<Split> splits, int subtaskId) {
            pending.addAll(splits);
        }

        @Override
        public void addReader(int subtaskId) {
            int p = context.currentParallelism();
            for (Iterator<Split> it = pending.iterator(); it.hasNext(); ) {
                Split s = it.next();
                if (s.index % p == subtaskId) {
                    context.assignSplit(s, subtaskId);
                    it.remove();
                }
            }
            context.signalNoMoreSplits(subtaskId);
        }

        @Override
        public Collection<Split> snapshotState(long checkpointId) {
            List<Split> out = new ArrayList<>(pending.size());
            for (Split s : pending) {
                out.add(s.copy());
            }
            return out;
        }

        @Override
        public void close() {}
    }

    /** Generates its splits' rows, one split after the other. */
    static final class Reader implements SourceReader<RowData, Split> {
        /** Rows per pollNext call. */
        static final int BATCH = 256;

        private final NexmarkRows.Maker maker;
        private final ArrayDeque<Split> splits = new ArrayDeque<>();
        private Split current;
        private boolean noMoreSplits;
        private CompletableFuture<Void> available = new CompletableFuture<>();

        Reader(NexmarkRows.Maker maker) {
            this.maker = maker;
        }

        @Override
        public void start() {}

        @Override
        public InputStatus pollNext(ReaderOutput<RowData> output) {
            Split s = current;
            if (s == null) {
                s = splits.poll();
                if (s == null) {
                    return noMoreSplits ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
                }
                current = s;
            }
            long k = s.next;
            final long step = s.step;
            final long end = s.end;
            for (int i = 0; i < BATCH && k < end; i++) {
                output.collect(maker.row(k));
                k += step;
            }
            s.next = k;
            if (k >= end) {
                current = null;
                if (splits.isEmpty()) {
                    return noMoreSplits ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
                }
            }
            return InputStatus.MORE_AVAILABLE;
        }

        @Override
        public CompletableFuture<Void> isAvailable() {
            if (current != null || !splits.isEmpty() || noMoreSplits) {
                return CompletableFuture.completedFuture(null);
            }
            if (available.isDone()) {
                available = new CompletableFuture<>();
            }
            return available;
        }

        @Override
        public void addSplits(List<Split> newSplits) {
            splits.addAll(newSplits);
            available.complete(null);
        }

        @Override
        public void notifyNoMoreSplits() {
            noMoreSplits = true;
            available.complete(null);
        }

        @Override
        public List<Split> snapshotState(long checkpointId) {
            List<Split> out = new ArrayList<>(splits.size() + 1);
            if (current != null) {
                out.add(current.copy());
            }
            for (Split s : splits) {
                out.add(s.copy());
            }
            return out;
        }

        @Override
        public void close() {}
    }

    static final class SplitSerializer implements SimpleVersionedSerializer<Split> {
        @Override
        public int getVersion() {
            return 1;
        }

        @Override
        public byte[] serialize(Split s) throws IOException {
            DataOutputSerializer out = new DataOutputSerializer(28);
            write(out, s);
            return out.getCopyOfBuffer();
        }

        @Override
        public Split deserialize(int version, byte[] bytes) throws IOException {
            return read(new DataInputDeserializer(bytes));
        }

        static void write(DataOutputSerializer out, Split s) throws IOException {
            out.writeInt(s.index);
            out.writeLong(s.next);
            out.writeLong(s.step);
            out.writeLong(s.end);
        }

        static Split read(DataInputDeserializer in) throws IOException {
            return new Split(in.readInt(), in.readLong(), in.readLong(), in.readLong());
        }
    }

    static final class CheckpointSerializer implements SimpleVersionedSerializer<Collection<Split>> {
        @Override
        public int getVersion() {
            return 1;
        }

        @Override
        public byte[] serialize(Collection<Split> splits) throws IOException {
            DataOutputSerializer out = new DataOutputSerializer(4 + 28 * splits.size());
            out.writeInt(splits.size());
            for (Split s : splits) {
                SplitSerializer.write(out, s);
            }
            return out.getCopyOfBuffer();
        }

        @Override
        public Collection<Split> deserialize(int version, byte[] bytes) throws IOException {
            DataInputDeserializer in = new DataInputDeserializer(bytes);
            int n = in.readInt();
            List<Split> out = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                out.add(SplitSerializer.read(in));
            }
            return out;
        }
    }
}
