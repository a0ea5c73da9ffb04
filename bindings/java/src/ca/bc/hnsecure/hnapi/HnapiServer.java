package ca.bc.hnsecure.hnapi;

import static ca.bc.hnsecure.hnapi.Hnapi.LIB;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A receiving application ({@code HnapiServer} of {@code libhnapi}): receives the requests
 * the gateway routes to its application names (MSH-5) and responds to each.
 *
 * <p>Thread-safe: several threads may receive and respond at once. {@link #close()} waits
 * for the calls in flight (a waiting {@link #receive} notices within 200 ms); calls after
 * it throw {@link IllegalStateException}. The gateway answers requests left unanswered
 * with an AR ({@code TXFR024E}).
 */
public final class HnapiServer implements AutoCloseable {
    /** The request buffer a receive starts with; a larger request costs one more native call. */
    static final int INITIAL_BUFFER = 8 * 1024;

    private static final int TOO_SMALL = HnetRtrn.HNET_RTRN_BUFFERTOOSMALL.code();
    private static final int PENDING = HnetRtrn.HNET_RTRN_PENDING.code();

    /** One request received: {@code id} is what to {@link #respond} with. */
    public record Request(long id, byte[] message) {
        /** A request; {@code message} is not copied. */
        public Request {
            Objects.requireNonNull(message, "message");
        }

        @Override
        public String toString() {
            return "Request[id=" + Long.toUnsignedString(id) + ", " + message.length + " bytes]";
        }
    }

    private final NativeHandle handle;
    private final Cleaner.Cleanable cleanable;
    /**
     * One receiving thread in the library at a time. No request can be lost without it:
     * the library queues a request whose buffer was too small and hands it to the next
     * receive on any thread (src/ffi/server.rs). The lock makes that next receive this
     * thread's retry, with a buffer of the size the library asked for, instead of another
     * thread's with a buffer that may be too small again. Threads waiting here would have
     * waited in the library anyway: it serves one waiting receiver at a time.
     */
    private final ReentrantLock receiving = new ReentrantLock(true);

    private HnapiServer(Pointer server) {
        this.handle = new NativeHandle(server, LIB::hnapi_server_close, "HnapiServer");
        this.cleanable = NativeHandle.CLEANER.register(this, handle);
    }

    /**
     * Opens a server application from the {@code server.toml} at {@code config}; it
     * connects to the gateway in the background and stays connected until closed.
     */
    public static HnapiServer open(Path config) {
        Objects.requireNonNull(config, "config");
        PointerByReference out = new PointerByReference();
        int rc = LIB.hnapi_server_open(config.toString(), out);
        if (rc != 0) {
            throw Hnapi.failure(rc, "hnapi_server_open");
        }
        return new HnapiServer(out.getValue());
    }

    /**
     * The next request, waiting up to {@code wait}: {@code null} or
     * {@link Hnapi#FOREVER} waits until one comes; zero polls. Returns {@code null} when
     * a finite wait ended before one came, or when this thread is interrupted while
     * waiting (its interrupt status stays set).
     */
    public Request receive(Duration wait) {
        Hnapi.Deadline deadline = new Hnapi.Deadline(Hnapi.waitMs(wait));
        try {
            for (long slice = deadline.nextSlice(); slice >= 0; slice = deadline.nextSlice()) {
                handle.checkOpen();
                boolean locked;
                try {
                    locked = receiving.tryLock(slice, TimeUnit.MILLISECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return null;
                }
                if (locked) {
                    try {
                        long left = deadline.nextSlice();
                        int waitMs = (int) Math.max(0, left);
                        Request request = handle.use(s -> receiveOnce(s, waitMs));
                        if (request != null) {
                            return request;
                        }
                        if (left < 0) {
                            return null;
                        }
                    } finally {
                        receiving.unlock();
                    }
                }
                if (Thread.currentThread().isInterrupted()) {
                    return null;
                }
            }
            return null;
        } finally {
            Reference.reachabilityFence(this);
        }
    }

    private static Request receiveOnce(Pointer s, int waitMs) {
        byte[] buf = new byte[INITIAL_BUFFER];
        SizeTByReference len = new SizeTByReference();
        LongByReference id = new LongByReference();
        int rc = LIB.hnapi_server_receive(s, waitMs, id, buf, SizeT.of(buf.length), len);
        // ABI contract 4: the request is kept for the next call.
        for (int i = 0; rc == TOO_SMALL && i < 3; i++) {
            buf = new byte[Hnapi.bufferSize(len.getValue())];
            rc = LIB.hnapi_server_receive(s, 0, id, buf, SizeT.of(buf.length), len);
        }
        if (rc == PENDING) {
            return null;
        }
        if (rc != 0) {
            throw Hnapi.failure(rc, "hnapi_server_receive");
        }
        return new Request(id.getValue(), Arrays.copyOf(buf, (int) len.getValue()));
    }

    /**
     * Waits up to {@code wait} ({@code null} or {@link Hnapi#FOREVER}: until then; zero
     * only looks) for a gateway to accept this server application: {@code true} when it
     * is serving. Until then the gateway answers requests to its names with an AR
     * (HNPS007E).
     */
    public boolean waitConnected(Duration wait) {
        long ms = Hnapi.waitMs(wait);
        int waitMs = ms < 0 ? HnapiLibrary.WAIT_FOREVER : (int) Math.min(ms, 0xFFFF_FFFEL);
        try {
            return handle.use(s -> {
                int rc = LIB.hnapi_server_wait_connected(s, waitMs);
                if (rc == 0) {
                    return true;
                }
                if (rc == HnetRtrn.HNET_RTRN_PENDING.code()) {
                    return false;
                }
                throw Hnapi.failure(rc, "hnapi_server_wait_connected");
            });
        } finally {
            Reference.reachabilityFence(this);
        }
    }

    /**
     * Sends {@code answer} (HL7 with a usable MSH) as the answer to the request
     * {@code requestId}.
     *
     * @throws HnapiException {@code HNET_RTRN_UNKNOWNREQUEST} when the request is unknown,
     *     already answered or no longer awaited; {@code HNET_RTRN_CONNECTIONERROR} when its
     *     connection is gone
     */
    public void respond(long requestId, byte[] answer) {
        Objects.requireNonNull(answer, "answer");
        try {
            handle.use(s -> {
                int rc = LIB.hnapi_server_respond(s, requestId, answer, SizeT.of(answer.length));
                if (rc != 0) {
                    throw Hnapi.failure(rc, "hnapi_server_respond");
                }
                return null;
            });
        } finally {
            Reference.reachabilityFence(this);
        }
    }

    /** True once {@link #close()} was called. */
    public boolean isClosed() {
        try {
            handle.checkOpen();
            return false;
        } catch (IllegalStateException e) {
            return true;
        }
    }

    /** Closes the server application; waits for calls in flight. Calling it again does nothing. */
    @Override
    public void close() {
        handle.run();
        cleanable.clean();
    }
}
